"""HTTP Source: a data source reading CSV or JSON rows from an allowed host.

Egress goes through the orchestrator's proxy (``ctx.host.http``, ``network:access``); the
manifest's ``network.allowed_hosts`` limits where. Rows are paged with an offset cursor.
"""

import csv
import io
import json
from typing import Any

from summit_sdk import DataSource, PluginContext, PluginError, collect, data_source
from summit_sdk.points import DataSourcePage, DataSourceQuery

PLUGIN_ID = "com.example.http-source"
PLUGIN_VERSION = "1.0.0"


def parse_rows(content: bytes, content_type: str, url: str) -> list[dict[str, Any]]:
    text = content.decode("utf-8-sig")
    if "json" in content_type or url.endswith(".json"):
        data = json.loads(text)
        rows = data.get("records", data.get("data")) if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise PluginError(
                "JSON must be a list of objects (or {records: [...]})", code="bad_data"
            )
        return rows
    return list(csv.DictReader(io.StringIO(text)))


@data_source("http")
class HttpSource(DataSource):
    """``query.url`` (or config ``url``); ``query.where`` keeps rows with equal fields."""

    def fetch(self, query: DataSourceQuery, ctx: PluginContext) -> DataSourcePage:
        url = query.query.get("url") or ctx.config.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise PluginError(
                "query.url (or config url) must be an http(s) URL", code="invalid_input"
            )
        response = ctx.host.http.get(url, headers={"accept": "application/json, text/csv"})
        if response.status_code != 200:
            raise PluginError(
                f"{url} answered {response.status_code}", code="upstream_error", status=502
            )
        try:
            rows = parse_rows(response.content, response.headers.get("content-type", ""), url)
        except (ValueError, csv.Error) as exc:
            raise PluginError(f"cannot parse {url}: {exc}", code="bad_data", status=502) from None
        where = query.query.get("where") or {}
        rows = [r for r in rows if all(str(r.get(k)) == str(v) for k, v in where.items())]
        start = int(query.cursor or 0)
        end = start + query.limit
        return DataSourcePage(
            records=rows[start:end],
            next_cursor=str(end) if end < len(rows) else None,
            total=len(rows),
        )


plugin = collect(__name__, permissions=["network:access"])
