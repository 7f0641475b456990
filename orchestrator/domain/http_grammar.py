"""The HTTP/1.1 grammar Summit holds every request line and header field to before it is
written: the broker's connections to plugins (``broker/h1pool.py``) and the egress proxy
(``security/egress.py``) share it, so neither can be talked into sending what the other
refuses. Anything outside it could break the framing or smuggle a second request.

Pure patterns, no I/O; here in ``domain/`` so that both sides import it without importing
each other.
"""

from __future__ import annotations

import re

__all__ = ["FIELD_VALUE", "REQUEST_TARGET", "TOKEN", "TOKEN_BYTES"]

# RFC 9110 tokens: methods and field names.
_TOKEN_CHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
TOKEN = re.compile(_TOKEN_CHARS)
TOKEN_BYTES = re.compile(_TOKEN_CHARS.encode())

# h11's rule for a field value: no control characters, no leading or trailing blanks.
FIELD_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?")

# The origin form only (a path and query of visible ASCII): the broker never sends another.
REQUEST_TARGET = re.compile(rb"/[\x21-\x7e]*")
