"""The sample-input generator of ``summit-plugin verify``: every sample validates."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from summit_sdk.cli.samples import SchemaSampleError, config_from_schema, sample_from_schema

SCHEMAS: list[dict[str, Any]] = [
    {"type": "string"},
    {"type": "string", "minLength": 12},
    {"type": "string", "maxLength": 3},
    {"type": "string", "format": "email"},
    {"type": "string", "enum": ["b", "a"]},
    {"type": "integer", "minimum": 10},
    {"type": "integer", "maximum": -5},
    {"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 3},
    {"type": "integer", "minimum": 3, "multipleOf": 5},
    {"type": "number", "minimum": 0.25, "maximum": 0.5},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    {"type": "number", "minimum": 2, "multipleOf": 0.5},
    {"type": "boolean"},
    {"type": "null"},
    {"type": ["null", "integer"], "minimum": 4},
    {"type": "array", "items": {"type": "integer"}, "minItems": 3},
    {"type": "array", "items": {"type": "string"}, "maxItems": 0},
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}]},
    {
        "type": "object",
        "required": ["text", "lang"],
        "properties": {
            "text": {"type": "string", "maxLength": 5},
            "lang": {"enum": ["en", "fr"]},
            "extra": {"type": "integer"},
        },
        "additionalProperties": False,
    },
    {"properties": {"a": {"type": "integer"}, "b": {"const": 7}}},
    {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 2}]},
    {"oneOf": [{"type": "integer", "minimum": 5}, {"type": "string"}]},
    {"allOf": [{"required": ["a"], "properties": {"a": {"type": "string"}}}, {"type": "object"}]},
    {
        "$defs": {
            "item": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
        },
        "type": "array",
        "items": {"$ref": "#/$defs/item"},
    },
    {"type": "string", "default": "chosen"},
    {"type": "string", "examples": ["from-example"]},
    {},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[str(i) for i in range(len(SCHEMAS))])
def test_every_sample_validates(schema: dict[str, Any]) -> None:
    sample = sample_from_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(sample)


def test_specific_choices() -> None:
    assert sample_from_schema({"type": "string", "enum": ["b", "a"]}) == "b"
    assert sample_from_schema({"type": "string", "default": "chosen"}) == "chosen"
    assert sample_from_schema({"type": "integer", "minimum": 10}) == 10
    assert sample_from_schema({"type": "string", "maxLength": 3}) == "sam"
    assert sample_from_schema({"type": "object", "required": ["t"], "properties": {}}) == {
        "t": "sample"
    }
    # only required properties when a required list exists
    schema = {"type": "object", "required": ["a"], "properties": {"a": {}, "b": {}}}
    assert set(sample_from_schema(schema)) == {"a"}


def test_word_count_input() -> None:
    schema = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
    assert sample_from_schema(schema) == {"text": "sample"}


def test_bad_schemas_are_reported() -> None:
    with pytest.raises(SchemaSampleError):
        sample_from_schema({"$ref": "https://example.com/schema.json"})
    with pytest.raises(SchemaSampleError):
        sample_from_schema({"$ref": "#/$defs/missing"})
    with pytest.raises(SchemaSampleError):
        sample_from_schema({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"})
    with pytest.raises(SchemaSampleError):
        sample_from_schema(False)


def test_config_from_defaults_and_required() -> None:
    schema = {
        "type": "object",
        "required": ["token"],
        "properties": {
            "top": {"type": "integer", "default": 5},
            "token": {"type": "string", "minLength": 8},
            "optional": {"type": "string"},
        },
    }
    config = config_from_schema(schema)
    assert config == {"top": 5, "token": "samplexx"}
    jsonschema.validate(config, schema)
    assert config_from_schema(None) == {}
