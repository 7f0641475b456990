"""The plugin state machine of the design: which actions move a plugin where, and which are 409s."""

from __future__ import annotations

import pytest

from orchestrator.domain.lifecycle import (
    TRANSITIONS,
    PluginState,
    allowed_actions,
    next_state,
)

S = PluginState

# Every edge drawn in the design's lifecycle diagram.
DESIGN_EDGES = [
    (S.UNLOADED, "install", S.LOADED),
    (S.LOADED, "enable", S.INITIALIZING),
    (S.INITIALIZING, "initialized", S.ACTIVE),
    (S.ACTIVE, "reload", S.ACTIVE),
    (S.ACTIVE, "disable", S.UNLOADING),
    (S.UNLOADING, "destroy", S.LOADED),
    (S.LOADED, "uninstall", S.UNLOADED),
    (S.INITIALIZING, "fail", S.FAILED),
    (S.ACTIVE, "fail", S.FAILED),
    (S.FAILED, "enable", S.INITIALIZING),
]


@pytest.mark.parametrize(("current", "action", "target"), DESIGN_EDGES)
def test_design_edge(current: PluginState, action: str, target: PluginState) -> None:
    assert next_state(current, action) is target
    assert action in allowed_actions(current)


@pytest.mark.parametrize(
    ("current", "action"),
    [
        (S.LOADED, "disable"),
        (S.ACTIVE, "enable"),
        (S.ACTIVE, "uninstall"),
        (S.ACTIVE, "install"),
        (S.UNLOADED, "enable"),
        (S.UNLOADED, "uninstall"),
        (S.UNLOADED, "reload"),
        (S.LOADED, "install"),
        (S.LOADED, "reload"),
        (S.LOADED, "fail"),
        (S.UNLOADED, "fail"),
        (S.INITIALIZING, "enable"),
        (S.INITIALIZING, "uninstall"),
        (S.INITIALIZING, "reload"),
        (S.UNLOADING, "enable"),
        (S.UNLOADING, "uninstall"),
        (S.FAILED, "reload"),
        (S.FAILED, "initialized"),
        (S.ACTIVE, "no-such-action"),
    ],
)
def test_illegal_transition_has_no_target(current: PluginState, action: str) -> None:
    assert next_state(current, action) is None
    assert action not in allowed_actions(current)


def test_a_removed_plugin_can_only_be_installed() -> None:
    assert allowed_actions(S.UNLOADED) == ["install"]


def test_allowed_actions_agree_with_next_state() -> None:
    for state in PluginState:
        actions = allowed_actions(state)
        assert actions == sorted(set(actions))
        for action in actions:
            assert next_state(state, action) is not None


def test_every_state_is_reachable_from_unloaded_and_can_get_back() -> None:
    # No state is a dead end: a plugin in any state can eventually be uninstalled.
    def reachable(start: PluginState) -> set[PluginState]:
        seen, todo = {start}, [start]
        while todo:
            cur = todo.pop()
            for (frm, _), to in TRANSITIONS.items():
                if frm is cur and to not in seen:
                    seen.add(to)
                    todo.append(to)
        return seen

    assert reachable(S.UNLOADED) == set(PluginState)
    for state in PluginState:
        assert S.UNLOADED in reachable(state), f"{state} cannot reach UNLOADED"


def test_states_are_stored_and_shown_by_their_upper_case_name() -> None:
    assert [s.value for s in PluginState] == [s.name for s in PluginState]
    assert PluginState("ACTIVE") is S.ACTIVE
    with pytest.raises(ValueError):
        PluginState("active")
