"""pytest plugin (entry point ``pytest11``): the ``plugin_client`` fixture.

.. code-block:: python

    def test_count(plugin_client):
        client = plugin_client(plugin, config={"top": 3}, permissions=["storage"])
        assert client.call("analyzer", "word-count", {"text": "a b a"})["words"] == 3

Every client the factory made is shut down after the test. Loaded in every pytest run that
has the SDK installed, so it imports the test helpers only when the fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from summit_sdk.testing import PluginTestClient

PluginClientFactory = Callable[..., "PluginTestClient"]


@pytest.fixture
def plugin_client() -> Iterator[PluginClientFactory]:
    """A factory ``(plugin, **options) -> PluginTestClient``; see that class for options."""
    from summit_sdk.testing import PluginTestClient

    made: list[PluginTestClient] = []

    def make(plugin: Any, **options: Any) -> PluginTestClient:
        client = PluginTestClient(plugin, **options)
        made.append(client)
        return client

    yield make
    for client in reversed(made):
        client.close()
