"""Connecting to a plugin's unix socket without following anything the plugin planted.

Used by the orchestrator and by ``summit-plugin run``/``verify`` (which the marketplace runs on
untrusted images). The socket lives in a folder the plugin can write (it binds ``plugin.sock``
there), and the caller connects from the host, often as root. A plugin that swaps its socket for a
symlink must not steer the orchestrator to another socket on the host. So the last path
component is opened with ``O_PATH | O_NOFOLLOW``, checked to be a socket, and the connection
is made through ``/proc/self/fd/N``: to exactly the inode that was checked, with no window to
swap it in between. The folder itself sits in a directory the plugin cannot change.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

__all__ = [
    "NoFollowAsyncBackend",
    "NoFollowBackend",
    "checked_socket",
    "hand_over",
    "sync_transport",
]


class _Checked:
    """An fd on the socket inode at ``path`` (not on a link), closed on exit."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> str:
        try:
            self.fd = os.open(self.path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot open {self.path}: {exc.strerror}") from None
        mode = os.fstat(self.fd).st_mode
        if not stat.S_ISSOCK(mode):
            os.close(self.fd)
            self.fd = -1
            raise httpcore.ConnectError(f"{self.path} is not a socket (a link or a file?)")
        return f"/proc/self/fd/{self.fd}"

    def __exit__(self, *exc_info: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)


def checked_socket(path: str) -> _Checked:
    return _Checked(path)


class NoFollowBackend(httpcore.SyncBackend):
    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        with checked_socket(path) as safe:
            return super().connect_unix_socket(safe, timeout, socket_options)


class NoFollowAsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        with checked_socket(path) as safe:
            return await self._inner.connect_unix_socket(safe, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def sync_transport(uds: str | None) -> httpx.HTTPTransport:
    """httpx's transport for a plugin endpoint, with the checked unix-socket connect."""
    transport = httpx.HTTPTransport(uds=uds, retries=0, verify=False)
    if uds is not None:
        # httpx has no option for the network backend; its pool is replaced by an equal one.
        transport._pool = httpcore.ConnectionPool(
            uds=uds, retries=0, network_backend=NoFollowBackend()
        )
    return transport


def hand_over(path: str | os.PathLike[str], uid: int, gid: int) -> None:
    """Let the plugin's user connect to a socket we just bound in its folder. The plugin could
    swap it for a link, so nothing here may follow one: ``lchown``, never ``chmod`` of a path
    as root. Not root: the socket is ours to open to others, if it is still a socket."""
    try:
        os.chown(path, uid, gid, follow_symlinks=False)
    except PermissionError:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.chmod(path, 0o666)
