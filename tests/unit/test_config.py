"""Settings from the environment: list spellings and one-line errors."""

from __future__ import annotations

import pytest

from orchestrator.config import SettingsProblem, load_settings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.0/8", ["127.0.0.0/8"]),
        ("10.0.0.0/8, 192.168.0.0/16", ["10.0.0.0/8", "192.168.0.0/16"]),
        ('["10.0.0.0/8", "::1/128"]', ["10.0.0.0/8", "::1/128"]),
        ("", []),
    ],
)
def test_list_settings_take_json_or_commas(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]
) -> None:
    monkeypatch.setenv("SUMMIT_WEBHOOK_ALLOW_PRIVATE", raw)
    monkeypatch.setenv("SUMMIT_ALLOW_PRIVATE_TARGETS", raw)
    settings = load_settings()
    assert settings.webhook_allow_private == expected
    assert settings.allow_private_targets == expected


def test_a_bad_setting_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUMMIT_WEBHOOK_ALLOW_PRIVATE", "[not json")
    monkeypatch.setenv("SUMMIT_PIDS_LIMIT", "many")
    with pytest.raises(SettingsProblem) as info:
        load_settings()
    text = str(info.value)
    assert "\n" not in text
    assert "SUMMIT_WEBHOOK_ALLOW_PRIVATE: expected a JSON list" in text
    assert "SUMMIT_PIDS_LIMIT:" in text
