"""The conformance suite of ``summit.plugin/v1``: what any plugin image must pass.

It reads the manifest from the image label, starts the image with the orchestrator's sandbox,
and checks the protocol over the unix socket. It needs nothing from the plugin's language.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from summit_sdk.cli import docker_ops
from summit_sdk.cli.conformance_host import ConformanceHost, serving
from summit_sdk.cli.manifest import ManifestError, manifest_from_label
from summit_sdk.cli.samples import SchemaSampleError, config_from_schema, sample_from_schema
from summit_sdk.spec import BASE_PATH, PROTOCOL

EXIT_TIMEOUT_S = 5.0
STARTUP_TIMEOUT_S = 30.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Report:
    image: str
    plugin_id: str | None = None
    version: str | None = None
    startup_ms: float | None = None
    checks: list[Check] = field(default_factory=list)
    # "operation status" of every host API call the plugin made (to the stand-in host).
    host_calls: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "plugin": {"id": self.plugin_id, "version": self.version},
            "passed": self.passed,
            "startup_ms": self.startup_ms,
            "checks": [asdict(c) for c in self.checks],
            "host_calls": self.host_calls,
        }


def error_shape(response: httpx.Response) -> str | None:
    """None when the body is ``{error:{code,message}}`` with strings, else what is wrong."""
    try:
        body = response.json()
    except ValueError:
        return "body is not JSON"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"body has no error object: {_short(body)}"
    if not isinstance(error.get("code"), str) or not isinstance(error.get("message"), str):
        return f"error needs string code and message: {_short(error)}"
    return None


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _schema_errors(schema: Any, value: Any) -> str | None:
    import jsonschema

    try:
        validator_cls = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
        errors = sorted(validator_cls(schema).iter_errors(value), key=lambda e: list(e.path))
    except jsonschema.SchemaError as exc:
        return f"output_schema is not a valid JSON Schema: {exc.message}"
    if not errors:
        return None
    first = errors[0]
    where = "/".join(str(p) for p in first.absolute_path) or "(root)"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"output at {where}: {first.message}{more}"


def run(docker: Any, image: str) -> Report:
    report = Report(image=image)
    try:
        img = docker.images.get(image)
    except Exception as exc:
        report.add("manifest", False, f"image {image} not found: {exc}")
        return report
    try:
        manifest = manifest_from_label(img.labels, image)
    except ManifestError as exc:
        report.add("manifest", False, str(exc))
        return report
    report.plugin_id, report.version = manifest["id"], manifest["version"]
    extensions = [e for e in manifest.get("extensions") or [] if isinstance(e, dict)]
    report.add(
        "manifest", True, f"{manifest['id']} {manifest['version']}, {len(extensions)} extension(s)"
    )
    try:
        box = docker_ops.start_sandboxed(docker, image, manifest, "verify")
    except docker_ops.DockerError as exc:
        report.add("start", False, str(exc))
        return report
    with docker_ops.removing(box):
        try:
            health, seconds = docker_ops.wait_healthy(box, STARTUP_TIMEOUT_S)
        except docker_ops.DockerError as exc:
            report.add("start", False, str(exc))
            return report
        report.startup_ms = round(seconds * 1000, 1)
        report.add("start", True, f"healthy after {report.startup_ms:.0f} ms (network none)")
        host = ConformanceHost(manifest)
        with box.http(timeout=30) as http, serving(host, box.socket_dir) as host_url:
            _check_health(report, health, manifest, extensions)
            _check_initialize(report, http, manifest, host_url, host.token)
            for ext in extensions:
                _check_extension(report, http, ext)
            _check_unknown_extension(report, http)
            _check_malformed(report, http, extensions)
            _check_event(report, http)
            answered = _check_shutdown(report, http)
        report.host_calls = [f"{c.operation} {c.status}" for c in host.calls]
        _check_exit(report, box, answered)
    return report


def _check_health(
    report: Report, response: httpx.Response, manifest: dict[str, Any], extensions: list[Any]
) -> None:
    try:
        body = response.json()
    except ValueError:
        report.add("health", False, "health body is not JSON")
        return
    problems = []
    if not isinstance(body, dict):
        report.add("health", False, f"health body must be an object: {_short(body)}")
        return
    if body.get("status") != "ok":
        problems.append(f"status {body.get('status')!r} != 'ok'")
    if body.get("protocol") != PROTOCOL:
        problems.append(f"protocol {body.get('protocol')!r} != {PROTOCOL!r}")
    plugin = body.get("plugin")
    if not isinstance(plugin, dict):
        problems.append("plugin object missing")
    else:
        if plugin.get("id") != manifest["id"]:
            problems.append(f"plugin.id {plugin.get('id')!r} != manifest id {manifest['id']!r}")
        if plugin.get("version") != manifest["version"]:
            problems.append(
                f"plugin.version {plugin.get('version')!r} != manifest {manifest['version']!r}"
            )
    declared = sorted((str(e.get("point")), str(e.get("name"))) for e in extensions)
    listed = body.get("extensions")
    if not isinstance(listed, list) or not all(isinstance(e, dict) for e in listed):
        problems.append("extensions must be a list of {point, name}")
    else:
        served = sorted((str(e.get("point")), str(e.get("name"))) for e in listed)
        if served != declared:
            problems.append(
                "extensions "
                + ", ".join(f"{p}/{n}" for p, n in served)
                + " != manifest's "
                + ", ".join(f"{p}/{n}" for p, n in declared)
            )
    if problems:
        report.add("health", False, "; ".join(problems))
    else:
        report.add("health", True, f"{PROTOCOL}, {len(declared)} extension(s) as declared")


def _check_initialize(
    report: Report, http: httpx.Client, manifest: dict[str, Any], host_url: str, token: str
) -> None:
    config = config_from_schema(manifest.get("config_schema"))
    body = {
        "config": config,
        "host": {"url": host_url, "token": token},
        "permissions": list(manifest.get("permissions") or []),
    }
    try:
        response = http.post(f"{BASE_PATH}/initialize", json=body)
    except httpx.HTTPError as exc:
        report.add("initialize", False, f"{type(exc).__name__}: {exc}")
        return
    if response.status_code != 200:
        report.add("initialize", False, f"{response.status_code}: {_short(response.text)}")
        return
    report.add("initialize", True, f"config {_short(config, 80)}")


def _check_extension(report: Report, http: httpx.Client, ext: dict[str, Any]) -> None:
    point, name = ext.get("point"), ext.get("name")
    check = f"extension {point}/{name}"
    try:
        sample = sample_from_schema(ext.get("input_schema") or {"type": "object"})
    except SchemaSampleError as exc:
        report.add(check, False, f"cannot generate a sample input: {exc}")
        return
    payload = {"input": sample, "context": {"request_id": f"verify-{uuid.uuid4().hex[:12]}"}}
    start = time.monotonic()
    try:
        response = http.post(f"{BASE_PATH}/extensions/{point}/{name}", json=payload)
    except httpx.HTTPError as exc:
        report.add(check, False, f"{type(exc).__name__}: {exc}")
        return
    ms = (time.monotonic() - start) * 1000
    if response.status_code != 200:
        report.add(
            check,
            False,
            f"input {_short(sample, 60)} -> {response.status_code}: {_short(response.text)}",
        )
        return
    try:
        body = response.json()
    except ValueError:
        report.add(check, False, "answer is not JSON")
        return
    if not isinstance(body, dict) or "output" not in body:
        report.add(check, False, f"answer has no 'output': {_short(body)}")
        return
    schema = ext.get("output_schema")
    if schema is not None:
        problem = _schema_errors(schema, body["output"])
        if problem:
            report.add(check, False, problem)
            return
    checked = "output matches output_schema" if schema is not None else "no output_schema"
    report.add(check, True, f"input {_short(sample, 60)}; {checked}; {ms:.0f} ms")


def _check_unknown_extension(report: Report, http: httpx.Client) -> None:
    name = "unknown extension"
    payload = {"input": {}, "context": {"request_id": "verify-unknown"}}
    try:
        response = http.post(
            f"{BASE_PATH}/extensions/analyzer/summit-verify-no-such-extension", json=payload
        )
    except httpx.HTTPError as exc:
        report.add(name, False, f"{type(exc).__name__}: {exc}")
        return
    if response.status_code != 404:
        report.add(name, False, f"answered {response.status_code}, expected 404")
        return
    problem = error_shape(response)
    report.add(name, problem is None, problem or f"404 {response.json()['error']['code']}")


def _check_malformed(report: Report, http: httpx.Client, extensions: list[Any]) -> None:
    name = "malformed body"
    if extensions:
        path = f"{BASE_PATH}/extensions/{extensions[0].get('point')}/{extensions[0].get('name')}"
    else:
        path = f"{BASE_PATH}/extensions/analyzer/summit-verify"
    try:
        response = http.post(
            path, content=b'{"input": ', headers={"content-type": "application/json"}
        )
    except httpx.HTTPError as exc:
        report.add(name, False, f"{type(exc).__name__}: {exc}")
        return
    if not 400 <= response.status_code < 500:
        report.add(name, False, f"answered {response.status_code}, expected 4xx")
        return
    problem = error_shape(response)
    report.add(
        name,
        problem is None,
        problem or f"{response.status_code} {response.json()['error']['code']}",
    )


def _check_event(report: Report, http: httpx.Client) -> None:
    event = {"type": "summit.verify", "id": uuid.uuid4().hex, "data": {}}
    try:
        response = http.post(f"{BASE_PATH}/events", json={"event": event})
    except httpx.HTTPError as exc:
        report.add("events", False, f"{type(exc).__name__}: {exc}")
        return
    ok = 200 <= response.status_code < 300
    report.add(
        "events",
        ok,
        f"answered {response.status_code}" + ("" if ok else f": {_short(response.text)}"),
    )


def _check_shutdown(report: Report, http: httpx.Client) -> bool:
    try:
        response = http.post(f"{BASE_PATH}/shutdown", json={})
    except httpx.HTTPError as exc:
        report.add("shutdown", False, f"{type(exc).__name__}: {exc}")
        return False
    ok = response.status_code == 200
    report.add("shutdown", ok, f"answered {response.status_code}")
    return True


def _check_exit(report: Report, box: docker_ops.Sandbox, answered: bool) -> None:
    name = f"exit within {EXIT_TIMEOUT_S:g} s"
    if not answered:
        report.add(name, False, "shutdown was not answered")
        return
    start = time.monotonic()
    while time.monotonic() - start < EXIT_TIMEOUT_S:
        state = box.state()
        if not state.get("Running"):
            code = state.get("ExitCode")
            took = (time.monotonic() - start) * 1000
            report.add(
                name,
                code == 0,
                f"exited {code} after {took:.0f} ms" + ("" if code == 0 else " (expected 0)"),
            )
            return
        time.sleep(0.05)
    report.add(name, False, f"still running {EXIT_TIMEOUT_S:g} s after shutdown")
