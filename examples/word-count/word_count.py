"""Word Count: an analyzer that counts words and reports the most frequent ones."""

import re
from collections import Counter
from typing import Any

from summit_sdk import PluginContext, PluginError, create_plugin

DEFAULT_TOP = 5
_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")


def count_words(text: str, top: int = DEFAULT_TOP) -> dict[str, Any]:
    counts = Counter(word.lower() for word in _WORD.findall(text))
    # most_common keeps first-seen order among equal counts, so ties are stable.
    return {
        "words": sum(counts.values()),
        "unique": len(counts),
        "top": [{"word": w, "count": c} for w, c in counts.most_common(top)],
    }


def analyze(input: Any, ctx: PluginContext) -> dict[str, Any]:
    if not isinstance(input, dict) or not isinstance(input.get("text"), str):
        raise PluginError('input must be {"text": string}', code="invalid_input")
    top = ctx.config.get("top", DEFAULT_TOP)
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise PluginError("config 'top' must be a non-negative integer", code="invalid_config")
    return count_words(input["text"], top)


plugin = (
    create_plugin()
    .with_metadata(
        id="com.example.word-count",
        version="1.0.0",
        name="Word Count",
        description="Counts the words of a text and reports the most frequent ones",
    )
    .with_config_schema(
        {
            "type": "object",
            "properties": {
                "top": {
                    "type": "integer",
                    "minimum": 0,
                    "default": DEFAULT_TOP,
                    "description": "How many of the most frequent words to report",
                }
            },
        }
    )
    .extension("analyzer", "word-count", analyze)
    .build()
)
