from collections.abc import Iterator

import pytest

_ENV = (
    "SUMMIT_PLUGIN_ENTRYPOINT",
    "SUMMIT_PLUGIN_LISTEN",
    "SUMMIT_PLUGIN_MANIFEST",
    "SUMMIT_PLUGIN_CONCURRENCY",
    "SUMMIT_PLUGIN_LOG_LEVEL",
    "SUMMIT_PLUGIN_TOKEN",
)


@pytest.fixture(autouse=True)
def _isolated_plugin_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the runtime settings of the shell or of another test."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    yield
