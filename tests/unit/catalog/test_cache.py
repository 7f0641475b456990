"""The catalog's read cache on a real Redis: an answer is computed once and served from Redis
until a change bumps the generation; without Redis (or with Redis gone) it computes every time
and never fails a read."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import redis

from orchestrator.catalog.service import CatalogCache

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def cache() -> Iterator[CatalogCache]:
    prefix = f"t{secrets.token_hex(4)}"
    made = CatalogCache(URL, prefix=prefix, ttl_s=60)
    yield made
    client = redis.Redis.from_url(URL)
    for key in client.scan_iter(f"{prefix}:catalog:*"):
        client.delete(key)
    made.close()


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict[str, int]:
        self.calls += 1
        return {"n": self.calls}


@pytest.mark.redis
def test_a_read_is_computed_once_until_a_change(cache: CatalogCache) -> None:
    compute = Counter()
    assert cache.get_or_compute("search:q=weather", compute) == {"n": 1}
    assert cache.get_or_compute("search:q=weather", compute) == {"n": 1}  # from Redis
    assert cache.get_or_compute("search:q=rain", compute) == {"n": 2}  # another key
    cache.bump()  # a publish, a yank or a deprecation
    assert cache.get_or_compute("search:q=weather", compute) == {"n": 3}
    assert compute.calls == 3


@pytest.mark.redis
def test_every_replica_sees_a_change_at_once(cache: CatalogCache) -> None:
    other = CatalogCache(URL, prefix=cache.prefix.removesuffix(":catalog"), ttl_s=60)
    try:
        compute = Counter()
        cache.get_or_compute("page:com.acme.weather", compute)
        assert other.get_or_compute("page:com.acme.weather", compute) == {"n": 1}
        other.bump()
        assert cache.get_or_compute("page:com.acme.weather", compute) == {"n": 2}
    finally:
        other.close()


def test_without_redis_every_read_is_computed() -> None:
    for url in (None, "redis://127.0.0.1:1/0"):  # none configured, and one that is down
        cache = CatalogCache(url, prefix="x")
        compute = Counter()
        assert cache.get_or_compute("k", compute) == {"n": 1}
        assert cache.get_or_compute("k", compute) == {"n": 2}
        cache.bump()  # nothing to invalidate; no error either
        cache.close()
