import subprocess
import sys
from pathlib import Path
from typing import Any

from summit_sdk import create_plugin
from summit_sdk.testing import PluginTestClient

PLUGIN = (
    create_plugin()
    .with_metadata(id="com.example.fixture", version="1.0.0")
    .request_permissions("storage")
    .extension("analyzer", "keep", lambda i, ctx: ctx.host.storage.put("last", i))
)


def test_plugin_client_fixture_builds_and_initializes(plugin_client: Any) -> None:
    client = plugin_client(PLUGIN, config={"a": 1})
    assert isinstance(client, PluginTestClient)
    client.call("analyzer", "keep", "x")
    assert client.host.kv == {"last": "x"}


def test_plugin_client_fixture_shuts_clients_down(tmp_path: Path) -> None:
    # Run in a separate pytest: the entry point must load the plugin there too.
    (tmp_path / "test_uses_fixture.py").write_text(
        "from summit_sdk import create_plugin, on_shutdown\n"
        "STOPPED = []\n"
        "plugin = (create_plugin().with_metadata(id='com.example.s', version='1.0.0')\n"
        "          .on_shutdown(lambda ctx: STOPPED.append(1)).build())\n"
        "def test_a(plugin_client):\n"
        "    plugin_client(plugin)\n"
        "    assert STOPPED == []\n"
        "def test_b():\n"
        "    assert STOPPED == [1]\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
