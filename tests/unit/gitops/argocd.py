"""Runs an Argo CD health script the way Argo CD does: Lua 5.1 (Argo CD embeds gopher-lua, a
Lua 5.1 implementation) with the object in the global `obj`, returning a table with status and
message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa.lua51 as lua51

HEALTH_DIR = Path(__file__).resolve().parents[3] / "gitops" / "argocd" / "videoqueue.dev"
HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """Argo CD's view of `obj`: {"status": ..., "message": ...}."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = _to_lua(runtime, obj)
    script = (HEALTH_DIR / kind / "health.lua").read_text()
    result = runtime.execute(script)
    assert result is not None, f"{kind}/health.lua returned nothing"
    found = {"status": result["status"], "message": result["message"]}
    assert found["status"] in HEALTH_STATUSES, found
    return found


def _to_lua(runtime: Any, value: Any) -> Any:
    # Lists become Lua sequences (1-based) so ipairs walks them as Argo CD's JSON decoding does.
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value
