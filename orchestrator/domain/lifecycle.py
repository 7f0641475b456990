"""The plugin state machine of the design, as data.

UNLOADED --install--> LOADED --enable--> INITIALIZING --ok--> ACTIVE
ACTIVE --reload--> ACTIVE            ACTIVE --disable--> UNLOADING --destroy--> LOADED
LOADED --uninstall--> UNLOADED       running state --crash--> FAILED --enable--> INITIALIZING
"""

from __future__ import annotations

from enum import StrEnum


class PluginState(StrEnum):
    UNLOADED = "UNLOADED"
    LOADED = "LOADED"
    INITIALIZING = "INITIALIZING"
    ACTIVE = "ACTIVE"
    UNLOADING = "UNLOADING"
    FAILED = "FAILED"


S = PluginState

# (from, action) -> to. "fail" is the crash edge; "destroy" finishes a disable.
TRANSITIONS: dict[tuple[PluginState, str], PluginState] = {
    (S.UNLOADED, "install"): S.LOADED,
    (S.LOADED, "enable"): S.INITIALIZING,
    (S.FAILED, "enable"): S.INITIALIZING,
    (S.INITIALIZING, "initialized"): S.ACTIVE,
    (S.INITIALIZING, "fail"): S.FAILED,
    (S.ACTIVE, "reload"): S.ACTIVE,
    (S.ACTIVE, "fail"): S.FAILED,
    (S.ACTIVE, "disable"): S.UNLOADING,
    (S.FAILED, "disable"): S.UNLOADING,
    (S.UNLOADING, "destroy"): S.LOADED,
    (S.UNLOADING, "fail"): S.FAILED,
    (S.LOADED, "uninstall"): S.UNLOADED,
    (S.FAILED, "uninstall"): S.UNLOADED,
}

TRANSITIONAL = frozenset({S.INITIALIZING, S.UNLOADING})
RUNNING = frozenset({S.INITIALIZING, S.ACTIVE})


def next_state(current: PluginState, action: str) -> PluginState | None:
    """The state ``action`` leads to from ``current``, or None when the edge does not exist."""
    return TRANSITIONS.get((current, action))


def allowed_actions(current: PluginState) -> list[str]:
    return sorted(action for (state, action) in TRANSITIONS if state == current)
