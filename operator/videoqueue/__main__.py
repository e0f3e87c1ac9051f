"""`python -m videoqueue`: run the operator against the cluster of $KUBECONFIG or in-cluster."""

from __future__ import annotations

import argparse
import logging

import kopf

import videoqueue.controller.handlers  # noqa: F401  (registers the handlers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="videoqueue", description=__doc__)
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    kopf.configure(verbose=args.verbose)
    # One active replica at a time is issue work still to come (peering); until then the
    # operator runs standalone.
    kopf.run(clusterwide=True, standalone=True)


if __name__ == "__main__":
    main()
