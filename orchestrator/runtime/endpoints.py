"""Where a plugin serves its protocol, typed: a unix socket on this host (Docker backend) or
a TCP address (a pod IP on Kubernetes). The text form (``unix:///path/plugin.sock``,
``tcp://host:port``) is what the database keeps; it is parsed here and only here."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Endpoint", "TcpEndpoint", "UnixEndpoint", "parse_endpoint"]


@dataclass(frozen=True)
class UnixEndpoint:
    path: Path

    def __str__(self) -> str:
        return f"unix://{self.path}"

    @property
    def folder(self) -> Path:
        """The container's socket folder (holds ``plugin.sock`` and ``host.sock``)."""
        return self.path.parent


@dataclass(frozen=True)
class TcpEndpoint:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return "http://" + str(self).removeprefix("tcp://")


Endpoint = UnixEndpoint | TcpEndpoint


def parse_endpoint(text: str) -> Endpoint:
    """The endpoint ``text`` names; ValueError for anything else."""
    if text.startswith("unix://"):
        path = text.removeprefix("unix://")
        if not path.startswith("/"):
            raise ValueError(f"a unix endpoint needs an absolute path: {text!r}")
        return UnixEndpoint(Path(path))
    if text.startswith("tcp://"):
        raw_host, sep, port = text.removeprefix("tcp://").rpartition(":")
        host = raw_host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"a tcp endpoint is tcp://host:port: {text!r}")
        if ":" in host or host != raw_host:
            ipaddress.IPv6Address(host)  # ValueError if it is not one
        return TcpEndpoint(host, int(port))
    raise ValueError(f"unknown endpoint {text!r} (unix:// or tcp://)")
