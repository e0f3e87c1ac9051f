"""The tests' redis-server lives in videoqueue.envtest.redis_server (the benchmarks, which
may not import the tests, run one too); these names stay importable from here."""

from videoqueue.envtest.redis_server import RedisServer, TlsFiles, free_port

__all__ = ["RedisServer", "TlsFiles", "free_port"]
