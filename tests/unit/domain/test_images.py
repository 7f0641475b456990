"""Image references are checked before Docker is asked (a malformed one is a 422)."""

from __future__ import annotations

import pytest

from orchestrator.domain.errors import InvalidInput
from orchestrator.domain.images import check_image_reference

GOOD = [
    "busybox",
    "summit/plugin-python:latest",
    "127.0.0.1:5000/plugins/word-count:1.0.0",
    "localhost:5000/a/b/c@sha256:" + "a" * 64,
    "registry.example.com/team/plugin_x__y.z-w:v1.2_3@sha256:" + "0" * 64,
    "[::1]:5000/p:1",
    "sha256:" + "f" * 64,
]
BAD = [
    "UPPER/case",
    "a" * 256,
    "word-count:",
    "word count",
    "-leading",
    "name@sha256:short",
    "name:" + "t" * 129,
    "",
    "name//double",
    "http://registry/x",
]


@pytest.mark.parametrize("ref", GOOD)
def test_well_formed_references_pass(ref: str) -> None:
    assert check_image_reference(ref) == ref


@pytest.mark.parametrize("ref", BAD)
def test_malformed_references_are_422(ref: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_image_reference(ref)
    assert info.value.code == "invalid_image_reference"
    assert info.value.status_code == 422


def test_upper_case_says_why() -> None:
    with pytest.raises(InvalidInput, match="lower case"):
        check_image_reference("Registry.example.com/Team/Plugin:1")
