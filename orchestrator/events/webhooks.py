"""What a webhook subscription is made of, checked when it is registered: the URL (never a way
into the internal network), the filter (type patterns plus predicates on event fields), the
optional transformation (JMESPath or a template) and the signature every delivery carries.

Signature: ``Summit-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` with
the subscription's secret, the scheme Stripe and others use. A receiver recomputes the HMAC
over the raw body, compares in constant time, and refuses a timestamp too far from its clock
(:func:`verify_signature` is the reference).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import ipaddress
import re
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jmespath
import jmespath.exceptions

from orchestrator.domain.errors import InvalidInput
from orchestrator.security.targets import EgressRefused, address_allowed, parse_url

__all__ = [
    "SIGNATURE_HEADER",
    "Filter",
    "Transform",
    "check_url",
    "new_secret",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "Summit-Signature"
OPS = ("eq", "ne", "in", "not_in", "exists", "contains", "prefix", "gt", "gte", "lt", "lte")
FIELD_ROOTS = ("id", "type", "source", "subject", "time", "payload")
_FIELD = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")
_MISSING = object()


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``Summit-Signature`` header value for ``body``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(secret: str, body: bytes, header: str, *, tolerance_s: int = 300) -> bool:
    """What a receiver does: recompute, compare in constant time, refuse stale timestamps."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - t) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


# -- URL ----------------------------------------------------------------------------------------


def check_url(
    url: str, allow_private: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str:
    """Refuse what is not an http(s) URL, and a host on a loopback, private, link-local or
    otherwise non-public address unless the operator allowed that network. The sender checks
    the addresses again at every new connection (a name may be re-pointed later)."""
    try:
        target = parse_url(url)
    except EgressRefused as exc:
        raise InvalidInput(f"webhook url: {exc.message}", details={"url": url}) from None
    if target.literal is not None:
        addresses = [target.literal]
    else:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise InvalidInput(
                f"webhook url: {target.host} does not resolve ({exc.strerror or exc})",
                details={"url": url},
            ) from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        if not address_allowed(address, allow_private):
            raise InvalidInput(
                f"webhook url: {target.host} is on a loopback, private or link-local address; "
                "an operator must allow that network (SUMMIT_WEBHOOK_ALLOW_PRIVATE)",
                details={"url": url, "address": str(address)},
            )
    return url


# -- filter -------------------------------------------------------------------------------------


def _check_field(field: Any, where: str) -> str:
    if not isinstance(field, str) or not _FIELD.fullmatch(field):
        raise InvalidInput(f"{where}: field must be a dotted path such as 'payload.plugin_id'")
    if field.split(".")[0] not in FIELD_ROOTS:
        raise InvalidInput(f"{where}: field must start with one of {', '.join(FIELD_ROOTS)}")
    return field


def lookup(event: dict[str, Any], field: str) -> Any:
    value: Any = event
    for part in field.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


@dataclass(frozen=True)
class Predicate:
    field: str
    op: str
    value: Any

    @classmethod
    def parse(cls, raw: Any, index: int) -> Predicate:
        where = f"where[{index}]"
        if not isinstance(raw, dict):
            raise InvalidInput(f"{where}: a predicate is an object {{field, op, value}}")
        unknown = set(raw) - {"field", "op", "value"}
        if unknown:
            raise InvalidInput(f"{where}: unknown keys {sorted(unknown)}")
        field = _check_field(raw.get("field"), where)
        op = raw.get("op", "eq")
        if op not in OPS:
            raise InvalidInput(f"{where}: op must be one of {', '.join(OPS)}")
        value = raw.get("value")
        if op != "exists" and "value" not in raw:
            raise InvalidInput(f"{where}: op {op!r} needs a value")
        if op in ("in", "not_in") and not isinstance(value, list):
            raise InvalidInput(f"{where}: op {op!r} needs a list value")
        if op in ("gt", "gte", "lt", "lte") and (
            isinstance(value, bool) or not isinstance(value, int | float | str)
        ):
            raise InvalidInput(f"{where}: op {op!r} needs a number or a string")
        if op == "prefix" and not isinstance(value, str):
            raise InvalidInput(f"{where}: op 'prefix' needs a string")
        if op == "exists" and not isinstance(value, bool | None):
            raise InvalidInput(f"{where}: op 'exists' takes true or false")
        return cls(field, op, value)

    def holds(self, event: dict[str, Any]) -> bool:
        found = lookup(event, self.field)
        op, value = self.op, self.value
        if op == "exists":
            return (found is not _MISSING) == (value is not False)
        if found is _MISSING:
            return op in ("ne", "not_in")
        if op == "eq":
            return bool(found == value)
        if op == "ne":
            return bool(found != value)
        if op == "in":
            return found in value
        if op == "not_in":
            return found not in value
        if op == "contains":
            return isinstance(found, list | str) and value in found
        if op == "prefix":
            return isinstance(found, str) and found.startswith(value)
        if not _comparable(found, value):
            return False
        if op == "gt":
            return bool(found > value)
        if op == "gte":
            return bool(found >= value)
        if op == "lt":
            return bool(found < value)
        return bool(found <= value)


def _comparable(found: Any, value: Any) -> bool:
    if isinstance(found, bool) or isinstance(value, bool):
        return False
    numbers = int | float
    return (isinstance(found, numbers) and isinstance(value, numbers)) or (
        isinstance(found, str) and isinstance(value, str)
    )


@dataclass(frozen=True)
class Filter:
    types: tuple[str, ...]
    where: tuple[Predicate, ...]

    @classmethod
    def parse(cls, types: Any, where: Any) -> Filter:
        if not isinstance(types, list) or not types or len(types) > 50:
            raise InvalidInput("types: a list of 1 to 50 event type patterns, e.g. ['plugin.*']")
        for pattern in types:
            if not isinstance(pattern, str) or not 1 <= len(pattern) <= 128:
                raise InvalidInput("types: each pattern is a string of 1 to 128 characters")
            if not re.fullmatch(r"[A-Za-z0-9_.*?-]+", pattern):
                raise InvalidInput(
                    f"types: {pattern!r} is not a type pattern (dotted words, * and ? only)"
                )
        if not isinstance(where, list) or len(where) > 20:
            raise InvalidInput("where: a list of at most 20 predicates")
        return cls(tuple(types), tuple(Predicate.parse(p, i) for i, p in enumerate(where)))

    def matches(self, event: dict[str, Any]) -> bool:
        event_type = event["type"]
        if not any(fnmatch.fnmatchcase(event_type, p) for p in self.types):
            return False
        return all(p.holds(event) for p in self.where)


# -- transformation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    """``{"jmespath": "<expression>"}`` or ``{"template": <JSON>}`` where a string that is
    exactly ``{{ field }}`` takes that field's value and other strings have each
    ``{{ field }}`` replaced by its text."""

    spec: dict[str, Any] | None
    _compiled: Any = None

    @classmethod
    def parse(cls, spec: Any) -> Transform:
        if spec is None:
            return cls(None)
        if (
            not isinstance(spec, dict)
            or len(spec) != 1
            or next(iter(spec))
            not in (
                "jmespath",
                "template",
            )
        ):
            raise InvalidInput(
                'transform: either {"jmespath": "<expression>"} or {"template": <JSON>}'
            )
        if "jmespath" in spec:
            expression = spec["jmespath"]
            if not isinstance(expression, str) or not expression.strip():
                raise InvalidInput("transform.jmespath: a non-empty expression")
            try:
                compiled = jmespath.compile(expression)
            except jmespath.exceptions.JMESPathError as exc:
                raise InvalidInput(
                    f"transform.jmespath: {str(exc).splitlines()[0]}",
                    details={"expression": expression},
                ) from None
            return cls(spec, compiled)
        _check_template(spec["template"], "transform.template")
        return cls(spec)

    def apply(self, event: dict[str, Any]) -> Any:
        if self.spec is None:
            return event
        if self._compiled is not None:
            return self._compiled.search(event)
        return _render(self.spec["template"], event)


def _check_template(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _check_template(inner, f"{where}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _check_template(inner, f"{where}[{i}]")
    elif isinstance(value, str):
        for field in _PLACEHOLDER.findall(value):
            _check_field(field, where)


def _render(value: Any, event: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: _render(v, event) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, event) for v in value]
    if not isinstance(value, str):
        return value
    whole = _PLACEHOLDER.fullmatch(value.strip())
    if whole:
        found = lookup(event, whole.group(1))
        return None if found is _MISSING else found

    def text(match: re.Match[str]) -> str:
        found = lookup(event, match.group(1))
        return "" if found is _MISSING or found is None else str(found)

    return _PLACEHOLDER.sub(text, value)
