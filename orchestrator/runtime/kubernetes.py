"""``ContainerRuntime`` on Kubernetes: every plugin container is a Pod in one namespace.

Each deploy writes three objects under one name (built in ``kube_objects.py``): a Secret with
the call token, a NetworkPolicy that admits only the orchestrator pods, and the hardened Pod.
The Secret and the NetworkPolicy are created first, so the pod never runs for a moment without
its policy or token, then get an ownerReference to the Pod (so the cluster's garbage collector
deletes them with it); ``remove`` deletes them explicitly too, and ``sweep_endpoints`` deletes
any a crash left behind. The broker reaches the plugin at the pod IP (``TcpEndpoint``).

Requests go through the official client's ``ApiClient`` (its configuration, authentication,
token refresh and TLS) with the objects as plain JSON: since release 37 the typed API methods
take generated model classes, and our objects are dicts, validated against the Kubernetes
schemas in the tests; converting them to models and back would add nothing. Pod status is
polled while a deploy waits (no extra watch connection per deploy; the wait is dominated by
the image pull), and ``events`` runs one watch on the owned pods with a short read timeout, so
it notices ``stop`` within ``watch_poll_s``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from orchestrator.domain.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    RuntimeFailure,
    RuntimeUnavailable,
    SummitError,
)
from orchestrator.runtime.base import (
    LABEL_OWNER,
    LABEL_PLUGIN,
    LABEL_VERSION,
    ContainerSpec,
    ContainerStatus,
    RuntimeEvent,
)
from orchestrator.runtime.endpoints import Endpoint, TcpEndpoint
from orchestrator.runtime.kube_objects import (
    CONTAINER_NAME,
    LABEL_POD,
    label_value,
    network_policy_object,
    owner_reference,
    pod_name,
    pod_object,
    secret_object,
)

log = logging.getLogger(__name__)

__all__ = ["KubernetesRuntime"]

# Waiting reasons after which a pod will not start by itself (a wrong image, a missing
# pull secret, a container the runtime cannot create): the deploy fails at once.
FATAL_WAITING = frozenset(
    {
        "ErrImageNeverPull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
_DIGEST_HEX = frozenset("0123456789abcdef")
# The API server ends a watch after this long; the runtime then resumes it.
WATCH_TIMEOUT_S = 300


def _api_exception_types() -> tuple[type[Exception], ...]:
    from kubernetes.client.exceptions import ApiException

    return (ApiException,)


def _status_of_error(exc: Exception) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _reason_of(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, str | bytes) and body:
        with contextlib.suppress(ValueError):
            message = json.loads(body).get("message")
            if isinstance(message, str) and message:
                return message
    return str(getattr(exc, "reason", "") or exc)


def _translate(exc: Exception, what: str) -> SummitError:
    if isinstance(exc, SummitError):
        return exc
    if isinstance(exc, _api_exception_types()):
        status = _status_of_error(exc)
        reason = _reason_of(exc)
        if status == 404:
            return NotFound(f"{what}: {reason}", code="runtime_not_found")
        if status in (401, 403):
            return RuntimeFailure(
                f"{what}: the Kubernetes API refused the orchestrator ({status}: {reason})",
                details={"hint": "check the orchestrator's ServiceAccount, Role and RoleBinding"},
            )
        return RuntimeFailure(f"{what}: {status} {reason}")
    return RuntimeUnavailable(
        f"the Kubernetes API cannot be reached ({what}): {exc}",
        details={"hint": "run in a cluster, or point KUBECONFIG at one"},
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _is_pinned(image: str) -> bool:
    name, sep, digest = image.partition("@sha256:")
    return bool(sep and name and len(digest) == 64 and set(digest) <= _DIGEST_HEX)


def _plugin_container_status(pod: Mapping[str, Any]) -> dict[str, Any]:
    for item in (pod.get("status") or {}).get("containerStatuses") or []:
        if item.get("name") == CONTAINER_NAME:
            return dict(item)
    return {}


def _terminated(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    state = _plugin_container_status(pod).get("state") or {}
    terminated = state.get("terminated")
    return dict(terminated) if isinstance(terminated, dict) else None


class KubernetesRuntime:
    """Plugin pods in ``namespace``, labelled as ``owner``'s.

    ``api_client`` (a ``kubernetes.client.ApiClient``) replaces the configuration the runtime
    would otherwise load (in-cluster, else KUBECONFIG); the tests point one at the emulator.
    """

    # A pod cannot be frozen: the idle pause leaves plugins on Kubernetes running.
    can_pause = False

    def __init__(
        self,
        *,
        namespace: str,
        owner: str,
        orchestrator_namespace: str,
        orchestrator_labels: Mapping[str, str],
        plugin_port: int = 8080,
        host_api_port: int | None = None,
        image_pull_secrets: Iterable[str] = (),
        runtime_classes: Mapping[str, str] | None = None,
        api_client: Any = None,
        start_timeout_s: float = 120.0,
        request_timeout_s: float = 30.0,
        poll_s: float = 0.5,
        watch_poll_s: float = 1.0,
        sweep_grace_s: float | None = None,
    ) -> None:
        self.namespace = namespace
        self.owner = owner
        self.orchestrator_namespace = orchestrator_namespace
        self.orchestrator_labels = dict(orchestrator_labels)
        self.plugin_port = plugin_port
        self.host_api_port = host_api_port
        self.image_pull_secrets = tuple(image_pull_secrets)
        self.runtime_classes = dict(runtime_classes or {})
        self.start_timeout_s = start_timeout_s
        self.poll_s = poll_s
        self.watch_poll_s = watch_poll_s
        # A Secret or NetworkPolicy is written just before its pod: one younger than this
        # without a pod may belong to a deploy under way, and is not swept.
        self.sweep_grace_s = start_timeout_s + 60 if sweep_grace_s is None else sweep_grace_s
        self._timeout = (min(10.0, request_timeout_s), request_timeout_s)
        self._api = api_client
        self._lock = threading.Lock()
        if not self.orchestrator_labels:
            raise ValueError("orchestrator_labels must select the orchestrator pods")

    # -- client ------------------------------------------------------------------------------

    @property
    def api(self) -> Any:
        # Created lazily, as the Docker client is: the orchestrator must start (and answer
        # 503) while the cluster cannot be reached.
        with self._lock:
            if self._api is None:
                self._api = _load_api_client()
            return self._api

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: Any = None,
        stream: bool = False,
        text: bool = False,
    ) -> Any:
        """One API call with a JSON body; the decoded answer (its text when ``text``, the raw
        urllib3 response when ``stream``); errors translated to ours."""
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            api = self.api
            request = api.param_serialize(
                method=method,
                resource_path=path,
                query_params=list(query.items()) if query else None,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = api.call_api(*request, _request_timeout=timeout or self._timeout)
            if stream and 200 <= response.status <= 299:
                return response.response
            data = response.read()
            if not 200 <= response.status <= 299:
                raise ApiException.from_response(http_resp=response, body=None, data=None)
        except SummitError:
            raise
        except Exception as exc:
            raise _translate(exc, what) from exc
        if text:
            return data.decode("utf-8", "replace") if data else ""
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError as exc:
            raise RuntimeFailure(f"{what}: the Kubernetes API answered with no JSON") from exc

    def _path(self, kind: str, name: str | None = None, sub: str | None = None) -> str:
        base = {
            "pods": f"/api/v1/namespaces/{quote(self.namespace)}/pods",
            "secrets": f"/api/v1/namespaces/{quote(self.namespace)}/secrets",
            "networkpolicies": (
                f"/apis/networking.k8s.io/v1/namespaces/{quote(self.namespace)}/networkpolicies"
            ),
            "podmetrics": f"/apis/metrics.k8s.io/v1beta1/namespaces/{quote(self.namespace)}/pods",
        }[kind]
        if name is not None:
            base += f"/{quote(name, safe='')}"
        if sub is not None:
            base += f"/{sub}"
        return base

    @property
    def _owner_selector(self) -> str:
        return f"{LABEL_OWNER}={label_value(self.owner)}"

    def _owned(self, obj: Mapping[str, Any]) -> bool:
        # The API filters by the selector; checked again here so a server that ignores it
        # (or a label someone edited) can never hand another owner's object to us.
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return bool(labels.get(LABEL_OWNER) == label_value(self.owner))

    def _list(self, kind: str, what: str) -> list[dict[str, Any]]:
        answer = self._request(
            "GET", self._path(kind), what=what, query={"labelSelector": self._owner_selector}
        )
        items = (answer or {}).get("items") or []
        return [item for item in items if isinstance(item, dict) and self._owned(item)]

    def ping(self) -> None:
        self._request("GET", "/version", what="ping")

    # -- deploy ------------------------------------------------------------------------------

    def deploy(self, spec: ContainerSpec) -> ContainerStatus:
        if not _is_pinned(spec.image):
            raise InvalidInput(
                f"a plugin pod runs an image by digest (name@sha256:...), not {spec.image!r}",
                code="image_not_pinned",
                details={"image": spec.image},
            )
        if not spec.call_token:
            raise InvalidInput(
                "a plugin pod needs a call token (ContainerSpec.call_token): its port is on "
                "the pod network",
                code="call_token_missing",
            )
        runtime_class = self._runtime_class(spec.isolation)
        name = pod_name(spec.plugin_id, secrets.token_hex(6))
        secret = secret_object(
            name=name, namespace=self.namespace, owner=self.owner, spec=spec, token=spec.call_token
        )
        policy = network_policy_object(
            name=name,
            namespace=self.namespace,
            owner=self.owner,
            spec=spec,
            plugin_port=self.plugin_port,
            orchestrator_namespace=self.orchestrator_namespace,
            orchestrator_labels=self.orchestrator_labels,
            host_api_port=self.host_api_port,
        )
        pod = pod_object(
            name=name,
            namespace=self.namespace,
            owner=self.owner,
            spec=spec,
            image=spec.image,
            plugin_port=self.plugin_port,
            secret_name=name,
            runtime_class=runtime_class,
            image_pull_secrets=self.image_pull_secrets,
        )
        try:
            self._request("POST", self._path("secrets"), what="create secret", body=secret)
            self._request(
                "POST", self._path("networkpolicies"), what="create network policy", body=policy
            )
            created = self._request("POST", self._path("pods"), what="create pod", body=pod)
            uid = ((created or {}).get("metadata") or {}).get("uid")
            if uid:
                patch = {"metadata": {"ownerReferences": [owner_reference(name, uid)]}}
                for kind in ("secrets", "networkpolicies"):
                    self._request(
                        "PATCH",
                        self._path(kind, name),
                        what=f"own {kind}",
                        body=patch,
                        content_type="application/merge-patch+json",
                    )
            else:
                log.warning("the API gave pod %s no uid; its Secret and policy have no owner", name)
            return self._wait_started(name)
        except BaseException:
            # Nothing half-written: whatever of the three the API holds goes (a create that
            # failed on our side may still have been stored).
            try:
                self._delete_all(name, grace_s=0)
            except SummitError as exc:
                log.warning("cleaning up after the failed deploy of %s: %s", name, exc.message)
            raise

    def _runtime_class(self, isolation: str) -> str | None:
        if isolation in self.runtime_classes:
            return self.runtime_classes[isolation]
        if isolation not in ("runc", ""):
            # Silently running a gVisor-tier plugin under the default runtime would weaken
            # the sandbox an operator asked for.
            raise InvalidInput(
                f"isolation {isolation!r} has no RuntimeClass (SUMMIT_KUBE_RUNTIME_CLASSES)",
                code="isolation_unavailable",
            )
        return None

    def _wait_started(self, name: str) -> ContainerStatus:
        """Poll until the plugin container runs at a pod IP (or stopped: the caller reads its
        logs and exit code); fail at once on a reason it will not recover from."""
        deadline = time.monotonic() + self.start_timeout_s
        last = "no status yet"
        while True:
            pod = self._request("GET", self._path("pods", name), what="read pod")
            status = self._status_of(pod)
            if status.running and status.endpoint is not None:
                return status
            if _terminated(pod) is not None or status.status == "exited":
                return status
            waiting = (_plugin_container_status(pod).get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in FATAL_WAITING:
                raise RuntimeFailure(
                    f"pod {name} cannot start: {reason}: {waiting.get('message') or ''}".strip(),
                    details={"pod": name, "reason": reason},
                )
            phase = (pod.get("status") or {}).get("phase") or "Pending"
            last = f"phase {phase}" + (f", {reason}" if reason else "")
            if time.monotonic() >= deadline:
                raise RuntimeFailure(
                    f"pod {name} did not start within {self.start_timeout_s:g}s ({last})",
                    details={"pod": name},
                )
            time.sleep(self.poll_s)

    # -- reading -----------------------------------------------------------------------------

    def _status_of(self, pod: Mapping[str, Any]) -> ContainerStatus:
        meta = pod.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        labels = meta.get("labels") or {}
        pod_status = pod.get("status") or {}
        phase = pod_status.get("phase") or "Pending"
        container = _plugin_container_status(pod)
        state = container.get("state") or {}
        terminated = state.get("terminated") if isinstance(state.get("terminated"), dict) else None
        containers = (pod.get("spec") or {}).get("containers") or []
        spec: dict[str, Any] = next((c for c in containers if c.get("name") == CONTAINER_NAME), {})
        port = next(
            (p.get("containerPort") for p in spec.get("ports") or [] if p.get("containerPort")),
            self.plugin_port,
        )
        ip = pod_status.get("podIP")
        running = phase == "Running" and "running" in state and terminated is None
        if terminated is not None or phase in ("Succeeded", "Failed"):
            word = "exited"
        elif running:
            word = "running"
        elif phase == "Pending":
            word = "created"
        else:
            word = phase.lower()
        error = None
        if terminated is not None and terminated.get("reason") not in (None, "Completed"):
            error = " ".join(
                str(part) for part in (terminated.get("reason"), terminated.get("message")) if part
            )
        elif isinstance(state.get("waiting"), dict):
            waiting = state["waiting"]
            error = (
                " ".join(str(p) for p in (waiting.get("reason"), waiting.get("message")) if p)
                or None
            )
        elif pod_status.get("reason"):  # Evicted, ...
            error = f"{pod_status.get('reason')} {pod_status.get('message') or ''}".strip()
        exit_code = terminated.get("exitCode") if terminated is not None else None
        return ContainerStatus(
            id=str(meta.get("name", "")),
            name=str(meta.get("name", "")),
            plugin_id=annotations.get(LABEL_PLUGIN) or labels.get(LABEL_PLUGIN),
            version=annotations.get(LABEL_VERSION) or labels.get(LABEL_VERSION),
            image=str(spec.get("image", "")),
            endpoint=TcpEndpoint(ip, int(port)) if ip else None,
            running=running,
            status=word,
            exit_code=int(exit_code) if isinstance(exit_code, int) else None,
            oom_killed=bool(terminated is not None and terminated.get("reason") == "OOMKilled"),
            error=error,
        )

    def _read_owned_pod(self, container_id: str) -> dict[str, Any]:
        pod = self._request("GET", self._path("pods", container_id), what="read pod")
        if not isinstance(pod, dict) or not self._owned(pod):
            raise NotFound(f"pod {container_id} is not one of ours", code="runtime_not_found")
        return pod

    def status(self, container_id: str) -> ContainerStatus | None:
        try:
            return self._status_of(self._read_owned_pod(container_id))
        except NotFound:
            return None

    def pause(self, container_id: str) -> None:
        raise _no_pause()

    def unpause(self, container_id: str) -> None:
        raise _no_pause()

    def list_owned(self) -> list[ContainerStatus]:
        return [self._status_of(pod) for pod in self._list("pods", "list pods")]

    def logs(self, container_id: str, *, tail: int = 100) -> str:
        self._read_owned_pod(container_id)
        try:
            text: str = self._request(
                "GET",
                self._path("pods", container_id, "log"),
                what="read logs",
                query={"container": CONTAINER_NAME, "tailLines": str(tail)},
                text=True,
            )
        except RuntimeFailure as exc:
            # 400 while the container has not started: it has written nothing yet.
            log.debug("no logs for %s yet: %s", container_id, exc.message)
            return ""
        return text

    def stats(self, container_id: str) -> dict[str, float]:
        """Usage from the metrics API (metrics-server); ``{}`` where the cluster has none, or
        has no sample of this pod yet: "not available", never an error."""
        pod = self._read_owned_pod(container_id)
        try:
            sample = self._request(
                "GET", self._path("podmetrics", container_id), what="read pod metrics"
            )
        except (NotFound, RuntimeFailure) as exc:
            log.debug("no metrics for %s: %s", container_id, exc.message)
            return {}
        if not isinstance(sample, dict):
            return {}
        from kubernetes.utils import parse_quantity

        usage = next(
            (
                c.get("usage") or {}
                for c in sample.get("containers") or []
                if c.get("name") == CONTAINER_NAME
            ),
            None,
        )
        if usage is None:
            return {}
        limits: dict[str, Any] = {}
        for c in (pod.get("spec") or {}).get("containers") or []:
            if c.get("name") == CONTAINER_NAME:
                limits = (c.get("resources") or {}).get("limits") or {}
        try:
            out = {
                "memory_bytes": float(parse_quantity(usage.get("memory", "0"))),
                "cpu_percent": float(parse_quantity(usage.get("cpu", "0"))) * 100.0,
            }
            if "memory" in limits:
                out["memory_limit_bytes"] = float(parse_quantity(limits["memory"]))
        except ValueError:
            log.warning("pod metrics of %s are not quantities: %r", container_id, usage)
            return {}
        return out

    # -- removal -----------------------------------------------------------------------------

    def remove(self, container_id: str, *, grace_s: float = 0) -> None:
        try:
            self._read_owned_pod(container_id)
        except NotFound:
            # The pod is gone (or not ours); its Secret and policy may not be (a crash
            # mid-remove): those go if they are ours.
            for kind in ("secrets", "networkpolicies"):
                with contextlib.suppress(NotFound):
                    obj = self._request("GET", self._path(kind, container_id), what=f"read {kind}")
                    if isinstance(obj, dict) and self._owned(obj):
                        self._delete(kind, container_id)
            return
        self._delete_all(container_id, grace_s=grace_s)

    def _delete(self, kind: str, name: str, *, grace_s: float | None = None) -> None:
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if grace_s is not None:
            # At least 1 s: 0 would force-delete the object while the container still runs.
            body["gracePeriodSeconds"] = max(1, math.ceil(grace_s))
        with contextlib.suppress(NotFound):
            self._request("DELETE", self._path(kind, name), what=f"delete {kind}", body=body)

    def _delete_all(self, name: str, *, grace_s: float) -> None:
        """Delete the pod, then its Secret; its NetworkPolicy once the pod is gone (until then
        it still confines the terminating container; the garbage collector and the sweep take
        it if we stop waiting first)."""
        self._delete("pods", name, grace_s=grace_s)
        self._delete("secrets", name)
        if self._wait_gone(name, timeout_s=max(1.0, grace_s) + 10.0):
            self._delete("networkpolicies", name)

    def _wait_gone(self, name: str, *, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._request("GET", self._path("pods", name), what="read pod")
            except NotFound:
                return True
            except SummitError as exc:
                log.warning("cannot tell whether pod %s is gone: %s", name, exc.message)
                return False
            if time.monotonic() >= deadline:
                log.warning("pod %s is still terminating; its policy is left to the GC", name)
                return False
            time.sleep(self.poll_s)

    def sweep_endpoints(self, keep: set[Endpoint]) -> None:
        """Delete our Secrets and NetworkPolicies whose pod no longer exists (a crash between
        writing them and the pod, or a cluster without garbage collection). ``keep`` names
        live pods' addresses; what backs them is the pod itself, so it needs no check here."""
        pods = {(p.get("metadata") or {}).get("name") for p in self._list("pods", "list pods")}
        now = _now()
        for kind in ("secrets", "networkpolicies"):
            for obj in self._list(kind, f"list {kind}"):
                meta = obj.get("metadata") or {}
                target = (meta.get("labels") or {}).get(LABEL_POD) or meta.get("name")
                if target in pods:
                    continue
                born = _parse_time(meta.get("creationTimestamp"))
                if born is not None and (now - born).total_seconds() < self.sweep_grace_s:
                    continue
                log.info("sweeping %s %s (its pod %s is gone)", kind, meta.get("name"), target)
                self._delete(kind, str(meta.get("name")))

    # -- events ------------------------------------------------------------------------------

    def events(self, stop: threading.Event) -> Iterator[RuntimeEvent]:
        """``die`` (and ``oom`` first, for an out-of-memory kill) once per pod whose plugin
        container stops, and ``die`` for a pod deleted before it stopped; until ``stop``.

        A pod that had already stopped when the watch began is not reported (reconcile sees
        it); one that stops while a watch is being resumed is (the re-list finds it). Setting
        ``stop`` shuts the watch's socket down, so the generator ends at once."""
        watch = _WatchCloser(stop)
        try:
            yield from self._watch_pods(stop, watch)
        finally:
            watch.finish()

    def _watch_pods(self, stop: threading.Event, watch: _WatchCloser) -> Iterator[RuntimeEvent]:
        reported: set[str] = set()
        resource_version: str | None = None
        first = True
        while not stop.is_set():
            if resource_version is None:
                answer = self._request(
                    "GET",
                    self._path("pods"),
                    what="list pods",
                    query={"labelSelector": self._owner_selector},
                )
                pods = [p for p in (answer or {}).get("items") or [] if self._owned(p)]
                meta = (answer or {}).get("metadata") or {}
                resource_version = str(meta.get("resourceVersion") or "")
                reported &= {self._uid(p) for p in pods}
                for pod in pods:
                    if first:
                        if _terminated(pod) is not None:
                            reported.add(self._uid(pod))
                    else:
                        yield from self._pod_events(pod, reported, deleted=False)
                first = False
            response = self._open_watch(resource_version)
            if response is None:
                continue  # no answer within watch_poll_s: look at ``stop``, then ask again
            watch.track(response)
            try:
                for event in _watch_lines(response):
                    if stop.is_set():
                        return
                    kind = event.get("type")
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:  # our version is too old: list again
                            resource_version = None
                            break
                        raise RuntimeFailure(f"watch pods: {obj.get('message') or obj}")
                    version = (obj.get("metadata") or {}).get("resourceVersion")
                    if version:
                        resource_version = str(version)
                    if kind == "BOOKMARK" or not self._owned(obj):
                        continue
                    yield from self._pod_events(obj, reported, deleted=kind == "DELETED")
            except Exception as exc:
                if stop.is_set():
                    return
                # The server's timeout or a dropped connection: resume from the last version.
                log.debug("pod watch interrupted (%s); resuming", exc)
            finally:
                watch.track(None)
                with contextlib.suppress(Exception):
                    response.release_conn()
                    response.close()

    def _open_watch(self, resource_version: str | None) -> Any:
        """The streaming response of a watch from ``resource_version``; None when the server
        has sent no headers within ``watch_poll_s`` (an API server sends them at once; an
        emulator may wait for the first event)."""
        from urllib3.exceptions import MaxRetryError, ReadTimeoutError

        query = {
            "labelSelector": self._owner_selector,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_TIMEOUT_S),
        }
        if resource_version:
            query["resourceVersion"] = resource_version
        try:
            response = self._request(
                "GET",
                self._path("pods"),
                what="watch pods",
                query=query,
                stream=True,
                timeout=(self._timeout[0], self.watch_poll_s),
            )
        except RuntimeUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, ReadTimeoutError) or (
                isinstance(cause, MaxRetryError) and isinstance(cause.reason, ReadTimeoutError)
            ):
                return None
            raise
        # From now on a read waits for the next event (the server ends the watch after
        # WATCH_TIMEOUT_S); ``stop`` interrupts it through the closer.
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is not None:
            sock.settimeout(WATCH_TIMEOUT_S + 30)
        return response

    @staticmethod
    def _uid(pod: Mapping[str, Any]) -> str:
        meta = pod.get("metadata") or {}
        return str(meta.get("uid") or meta.get("name") or "")

    def _pod_events(
        self, pod: Mapping[str, Any], reported: set[str], *, deleted: bool
    ) -> Iterator[RuntimeEvent]:
        uid = self._uid(pod)
        if uid in reported:
            if deleted:
                reported.discard(uid)
            return
        terminated = _terminated(pod)
        if terminated is None and not deleted:
            return
        reported.add(uid)
        if deleted:
            reported.discard(uid)
        status = self._status_of(pod)
        if status.oom_killed:
            yield RuntimeEvent("oom", status.id, status.plugin_id, status.exit_code)
        yield RuntimeEvent("die", status.id, status.plugin_id, status.exit_code)


class _WatchCloser:
    """Shuts the socket of the watch in progress down as soon as ``stop`` is set, so that a
    read blocked waiting for the next event ends at once."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._done = threading.Event()
        self._current: Any = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name="kube-watch-close")
        self._thread.start()

    def track(self, response: Any) -> None:
        with self._lock:
            self._current = response
        if response is not None and self._stop.is_set():
            self._shutdown()

    def finish(self) -> None:
        self._done.set()

    def _run(self) -> None:
        while not self._done.is_set():
            if self._stop.wait(0.1):
                self._shutdown()
                return

    def _shutdown(self) -> None:
        with self._lock:
            response = self._current
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()


def _watch_lines(response: Any) -> Iterator[dict[str, Any]]:
    from kubernetes.watch.watch import iter_resp_lines

    for line in iter_resp_lines(response):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            log.warning("pod watch sent a line that is not JSON: %.200r", line)
            continue
        if isinstance(event, dict):
            yield event


def _load_api_client() -> Any:
    """In-cluster configuration when running in a pod, else KUBECONFIG (or ~/.kube/config)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(client_configuration=configuration)
    except (config.ConfigException, OSError) as exc:
        raise RuntimeUnavailable(
            f"no Kubernetes configuration: {exc}",
            details={"hint": "run in a cluster, or set KUBECONFIG"},
        ) from exc
    return client.ApiClient(configuration)


def _no_pause() -> SummitError:
    return Conflict(
        "a pod cannot be frozen: plugins on Kubernetes are not paused when idle",
        code="pause_unsupported",
    )
