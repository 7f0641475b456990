"""What the UI says in plain words: each permission a plugin asks for, each extension point,
each lifecycle state. An operator approving permissions should know what they allow without
reading the design notes."""

from __future__ import annotations

from typing import Any

__all__ = ["permission_words", "point_words", "state_words"]

_PERMISSIONS = {
    "read:data": "Read records in the platform's shared data collections.",
    "write:data": "Create, change and delete records in the shared data collections.",
    "network:access": "Reach hosts outside this orchestrator, through its egress proxy, "
    "only the hosts it lists.",
    "storage": "Keep its own files and key-value data here, up to its storage quota.",
    "events:publish": "Publish events, which other plugins and webhooks receive.",
    "events:subscribe": "Receive the events of the types it subscribes to.",
    "secrets:read": "Read the secrets an operator stores for it.",
    "plugins:invoke": "Call the plugins it declares as dependencies.",
}

_POINTS = {
    "data_source": "provides data",
    "analyzer": "analyzes data",
    "visualization": "draws charts",
    "export": "exports data",
    "auth_provider": "signs callers in",
    "workflow": "runs workflow steps",
}

_STATES = {
    "UNLOADED": "not installed",
    "LOADED": "installed, not running",
    "INITIALIZING": "starting",
    "ACTIVE": "running",
    "UNLOADING": "stopping",
    "FAILED": "failed",
}


def permission_words(permission: str, manifest: dict[str, Any] | None = None) -> str:
    """What ``permission`` lets the plugin do; for ``network:access``, which hosts."""
    words = _PERMISSIONS.get(permission, "A permission this orchestrator does not know.")
    if permission == "network:access" and manifest:
        hosts = (manifest.get("network") or {}).get("allowed_hosts") or []
        if hosts:
            words += " Hosts: " + ", ".join(str(h) for h in hosts) + "."
    return words


def point_words(point: str) -> str:
    return _POINTS.get(point, point)


def state_words(state: str) -> str:
    return _STATES.get(state, state.lower())
