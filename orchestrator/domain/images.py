"""OCI image references, checked before a container engine is asked about them.

The grammar is the distribution project's reference grammar (the one Docker, containerd and
every registry client share): ``[domain[:port]/]path[:tag][@digest]``, path components in
lower case, at most 255 characters of name. Written here as four regular expressions because
no maintained Python package exposes it; a malformed reference is the caller's mistake (422),
not a runtime failure.
"""

from __future__ import annotations

import re

from orchestrator.domain.errors import InvalidInput

__all__ = ["MAX_NAME_LENGTH", "check_image_reference", "names_registry"]

MAX_NAME_LENGTH = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_SUFFIX = rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
# As Docker reads a name: the first part is a registry only if it has a dot or a port, is
# "localhost" or an IPv6 literal; otherwise it is the first path component (lower case).
_WITH_DOMAIN = re.compile(rf"(?P<name>{_DOMAIN}/{_PATH}){_SUFFIX}")
_WITHOUT_DOMAIN = re.compile(rf"(?P<name>{_PATH}){_SUFFIX}")
# A local image may also be named by its ID alone (what `docker images -q --no-trunc` prints).
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")


def check_image_reference(ref: str) -> str:
    """Return ``ref`` if it is a well-formed image reference; else raise 422
    ``invalid_image_reference`` saying what is wrong."""
    if _IMAGE_ID.fullmatch(ref):
        return ref
    match = _parse(ref)
    if match is None:
        hint = (
            "repository names are lower case"
            if ref != ref.lower() and _parse(ref.lower()) is not None
            else "expected [registry[:port]/]name[:tag][@sha256:digest]"
        )
        raise InvalidInput(
            f"{ref[:80]!r} is not a valid image reference: {hint}",
            code="invalid_image_reference",
            details={"image": ref[:300]},
        )
    if len(match["name"]) > MAX_NAME_LENGTH:
        raise InvalidInput(
            f"the image name is {len(match['name'])} characters long; at most "
            f"{MAX_NAME_LENGTH} are allowed",
            code="invalid_image_reference",
            details={"image": ref[:300]},
        )
    return ref


def names_registry(ref: str) -> bool:
    """Whether ``ref`` starts with a registry (Docker's rule: a first part with a dot or a
    port, ``localhost`` or an IPv6 literal); a bare local name cannot be pulled again."""
    first, slash, _ = ref.partition("/")
    return bool(slash) and (
        "." in first or ":" in first or first == "localhost" or first.startswith("[")
    )


def _parse(ref: str) -> re.Match[str] | None:
    return (_WITH_DOMAIN if names_registry(ref) else _WITHOUT_DOMAIN).fullmatch(ref)
