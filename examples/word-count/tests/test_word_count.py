import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from summit_sdk import create_app
from word_count import plugin

URL = "/summit/v1/extensions/analyzer/word-count"


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(plugin)) as client:
        yield client


def call(client: TestClient, text: Any) -> Any:
    return client.post(URL, json={"input": {"text": text}, "context": {"request_id": "r1"}})


def test_health_lists_the_analyzer(client: TestClient) -> None:
    body = client.get("/summit/v1/health").json()
    assert body["plugin"] == {"id": "com.example.word-count", "version": "1.0.0"}
    assert body["extensions"] == [{"point": "analyzer", "name": "word-count"}]


def test_counts_words_and_top_five_by_default(client: TestClient) -> None:
    text = "the cat and The dog and THE bird; a b c d"
    response = call(client, text)
    assert response.status_code == 200
    output = response.json()["output"]
    assert output["words"] == 12
    assert output["unique"] == 9
    assert output["top"][:2] == [{"word": "the", "count": 3}, {"word": "and", "count": 2}]
    assert len(output["top"]) == 5


def test_top_comes_from_config(client: TestClient) -> None:
    assert client.post("/summit/v1/initialize", json={"config": {"top": 1}}).status_code == 200
    output = call(client, "b a b").json()["output"]
    assert output == {"words": 3, "unique": 2, "top": [{"word": "b", "count": 2}]}


def test_empty_text(client: TestClient) -> None:
    assert call(client, "").json()["output"] == {"words": 0, "unique": 0, "top": []}


def test_missing_text_is_refused(client: TestClient) -> None:
    response = call(client, 42)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_input"
