"""DataLoaders of one GraphQL operation: a plugin's row, versions, grants, current container,
update notice and latest usage, each gathered for every plugin the operation touches in one
call to the services.

A list of fifty plugins with their versions and usage therefore costs the same few database
reads as a list of five (``tests/unit/api/test_graphql.py`` counts them). The loaders are made
afresh for every operation (``schema.FreshLoaders``), so a cached answer never outlives the
request that read it, and a long-lived WebSocket never serves yesterday's state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from strawberry.dataloader import DataLoader

from orchestrator.monitor.service import UsageService
from orchestrator.services.plugin_batches import InstalledVersion, PluginBatches, PluginSummary
from orchestrator.services.plugins import ContainerView, UpdateNotice

__all__ = ["Loaders", "make_loaders"]

K = TypeVar("K")
V = TypeVar("V")


def _batched(
    read: Callable[[list[K]], Mapping[K, V]], missing: Callable[[], V]
) -> Callable[[list[K]], Awaitable[list[V]]]:
    """A DataLoader's batch function over a blocking ``read`` of many keys (run in the thread
    pool, as the REST routes run the same services); a key ``read`` does not answer for gets
    ``missing()``."""

    async def load(keys: list[K]) -> list[V]:
        found = await run_in_threadpool(read, keys)
        return [found[k] if k in found else missing() for k in keys]

    return load


@dataclass(frozen=True)
class Loaders:
    plugin: DataLoader[str, PluginSummary | None]
    versions: DataLoader[str, list[InstalledVersion]]
    grants: DataLoader[str, list[str]]
    container: DataLoader[str, ContainerView | None]
    update: DataLoader[tuple[str, str], UpdateNotice | None]
    usage: DataLoader[str, dict[str, Any] | None]


def make_loaders(batches: PluginBatches, usage: UsageService | None) -> Loaders:
    def updates(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], UpdateNotice]:
        # Keyed by (plugin, installed version): a plugin read twice in one operation, once
        # before an upgrade and once after, gets the notice of each version.
        found = batches.update_notices(dict(keys))
        return {(pid, version): found[pid] for pid, version in keys if pid in found}

    def latest_usage(keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        # UsageService.current answers for every plugin in the same three reads it takes for
        # one; the REST API's GET /v1/usage is this call.
        if usage is None:
            return {}
        wanted = set(keys)
        return {u["plugin"]: u for u in usage.current()["plugins"] if u["plugin"] in wanted}

    return Loaders(
        plugin=DataLoader(load_fn=_batched(batches.many, lambda: None)),
        versions=DataLoader(load_fn=_batched(batches.versions, list)),
        grants=DataLoader(load_fn=_batched(batches.grants, list)),
        container=DataLoader(load_fn=_batched(batches.containers, lambda: None)),
        update=DataLoader(load_fn=_batched(updates, lambda: None)),
        usage=DataLoader(load_fn=_batched(latest_usage, lambda: None)),
    )
