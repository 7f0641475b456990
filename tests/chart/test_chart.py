"""The Helm chart ``charts/summit``, rendered with Helm's own engine and checked object by object.

Helm runs in this process through ``helm-python-sdk`` (Helm's Go SDK behind a C ABI, no ``helm``
binary): the chart is rendered once per values file (the defaults and every
``ci/*-values.yaml``) and linted strictly; every object is validated with
``kubernetes-validate`` in strict mode against Kubernetes ``KUBE_VERSION``, except the
ServiceMonitor (a Prometheus Operator CRD, of which kubernetes-validate ships no schema; it is
skipped by name, nothing else is). Then the invariants an operator relies on are asserted:
hardened pods with limits, the orchestrator's replicas, budget, spread and probes, RBAC in the
plugin namespace only (the verbs orchestrator/runtime/kubernetes.py calls), the plugin
namespace's Pod Security labels and default-deny policy, and settings that agree with the pods
they describe and that the real ``Settings`` and ``KubernetesRuntime`` accept.

What this does not prove: that a cluster admits, schedules, runs or enforces any of it. There
is no API server, no admission (Pod Security included), no kubelet and no network-policy
enforcement here; ``lookup`` sees no cluster, so the keep-the-generated-secret path on upgrade
is not exercised.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from cryptography.fernet import Fernet

pytestmark = pytest.mark.kubernetes

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "summit"
KUBE_VERSION = "1.31"
RELEASE = "summit"
NAMESPACE = "summit-system"
# Kinds kubernetes-validate has no schema for (custom resources), skipped explicitly.
CRD_KINDS = {"ServiceMonitor"}
VALUES_FILES = ["defaults", *sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))]
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
# What orchestrator/runtime/kubernetes.py calls (the PATCH sets a Secret's and a policy's
# ownerReference to their pod), and nothing more.
PLUGIN_RBAC = {
    ("", "pods"): {"get", "list", "watch", "create", "delete"},
    ("", "pods/log"): {"get"},
    ("", "secrets"): {"get", "list", "create", "patch", "delete"},
    ("networking.k8s.io", "networkpolicies"): {"get", "list", "create", "patch", "delete"},
    ("metrics.k8s.io", "pods"): {"get"},
}


@dataclass
class Rendered:
    """One rendering of the chart: its values, objects and NOTES."""

    name: str
    values: dict[str, Any]
    objects: list[dict[str, Any]]
    notes: str
    merged: dict[str, Any] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    def workloads(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] in WORKLOAD_KINDS]

    def component(self, component: str) -> dict[str, Any]:
        """The workload of one component (orchestrator, worker, postgresql, redis)."""
        found = [
            o
            for o in self.workloads()
            if o["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"{self.name}: expected one {component} workload"
        return found[0]

    @property
    def plugin_namespace(self) -> str:
        return str(self.one("ConfigMap")["data"]["SUMMIT_KUBE_NAMESPACE"])


def load_values(name: str) -> dict[str, Any]:
    if name == "defaults":
        return {}
    loaded = yaml.safe_load((CHART / "ci" / name).read_text())
    return dict(loaded or {})


def render(chart: helm.Chart, values: dict[str, Any], name: str = "custom") -> Rendered:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Rendered(name, values, objects, notes, chart.merge_values(values))


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    loaded = helm.Chart.load(CHART)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def by_file(chart: helm.Chart) -> dict[str, Rendered]:
    """Each values file rendered once for the whole module."""
    return {name: render(chart, load_values(name), name) for name in VALUES_FILES}


@pytest.fixture(params=VALUES_FILES)
def rendered(request: pytest.FixtureRequest, by_file: dict[str, Rendered]) -> Rendered:
    return by_file[request.param]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# -- Helm's own checks -------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_lint_strict_is_clean(values_file: str) -> None:
    report = helm.lint(
        CHART,
        load_values(values_file),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSION}.0",
    )
    # Severity: 1 info (e.g. "icon is recommended"), 2 warning, 3 error; strict fails on 2.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1
    assert not report["errors"] and not problems, (report["errors"], problems)


def test_every_object_is_valid_kubernetes(rendered: Rendered) -> None:
    failures: list[str] = []
    skipped: set[str] = set()
    for obj in rendered.objects:
        if obj["kind"] in CRD_KINDS:
            skipped.add(obj["kind"])
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}")
    assert not failures, "\n".join(failures)
    assert skipped <= CRD_KINDS
    if rendered.merged["metrics"]["serviceMonitor"]["enabled"]:
        assert skipped == {"ServiceMonitor"}


def test_the_validator_is_strict(by_file: dict[str, Rendered]) -> None:
    """A misspelt field, which Kubernetes would drop silently, fails the validation above."""
    deployment = copy.deepcopy(by_file["defaults"].component("orchestrator"))
    container = pod_spec(deployment)["containers"][0]
    container["securityContex"] = container.pop("securityContext")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_objects_are_in_the_namespaces_they_belong_to(rendered: Rendered) -> None:
    cluster_scoped = {"Namespace", "RuntimeClass"}
    in_plugin_namespace = {"Role", "RoleBinding"}
    for obj in rendered.objects:
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_scoped:
            assert namespace is None
        elif obj["kind"] in in_plugin_namespace:
            assert namespace == rendered.plugin_namespace, obj["metadata"]["name"]
        elif obj["kind"] == "NetworkPolicy":
            assert namespace in {NAMESPACE, rendered.plugin_namespace}
        else:
            assert namespace == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


# -- Pods --------------------------------------------------------------------------------------


def test_every_pod_is_hardened_and_limited(rendered: Rendered) -> None:
    workloads = rendered.workloads()
    expected = {"orchestrator"}
    if rendered.merged["worker"]["enabled"]:
        expected.add("worker")
    for database in ("postgresql", "redis"):
        if rendered.merged[database]["enabled"]:
            expected.add(database)
    components = {w["metadata"]["labels"]["app.kubernetes.io/component"] for w in workloads}
    assert components == expected

    for workload in workloads:
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        # Only the orchestrator talks to the Kubernetes API.
        assert spec["automountServiceAccountToken"] is (component == "orchestrator"), name
        assert spec["enableServiceLinks"] is False, name
        for host_field in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host_field), name
        pod_context = spec["securityContext"]
        assert pod_context["runAsNonRoot"] is True, name
        assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}, name

        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        for volume in volumes.values():
            assert "hostPath" not in volume, name
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("sizeLimit"), f"{name}: {volume['name']} unbounded"

        for container in containers(workload):
            where = f"{name}/{container['name']}"
            context = {**pod_context, **container["securityContext"]}
            assert context["runAsNonRoot"] is True, where
            assert int(context["runAsUser"]) > 0, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context.get("privileged", False) is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory", "ephemeral-storage"} <= set(resources[kind]), where
            # With a read-only root, whatever it writes is a volume of its own.
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claims, where
            assert "/tmp" in {m["mountPath"] for m in container.get("volumeMounts", [])}, where

    postgres = [w for w in workloads if w["metadata"]["name"].endswith("-postgresql")]
    for workload in postgres:
        mounts = {m["mountPath"] for m in pod_spec(workload)["containers"][0]["volumeMounts"]}
        assert {"/var/run/postgresql", "/var/lib/postgresql/data"} <= mounts


def test_orchestrator_runs_replicated_with_probes(rendered: Rendered) -> None:
    orchestrator_values = rendered.merged["orchestrator"]
    deployment = rendered.component("orchestrator")
    assert deployment["spec"]["replicas"] == orchestrator_values["replicaCount"]
    if rendered.name == "defaults":
        assert deployment["spec"]["replicas"] == 2
    spec = pod_spec(deployment)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)

    anti = spec["affinity"]["podAntiAffinity"]
    if orchestrator_values["podAntiAffinity"] == "soft":
        (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
        term = term["podAffinityTerm"]
        assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    else:
        (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert selects(term["labelSelector"]["matchLabels"], labels)

    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "http": orchestrator_values["port"],
        "host-api": orchestrator_values["hostApiPort"],
    }
    assert container["command"][:4] == ["summit", "serve", "--host", "0.0.0.0"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}

    budget = rendered.one("PodDisruptionBudget")
    assert selects(budget["spec"]["selector"]["matchLabels"], labels)
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]

    service = rendered.one("Service", f"{RELEASE}")
    assert selects(service["spec"]["selector"], labels)
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http", "host-api"}


def test_plugins_are_told_the_host_api_service_not_one_replica(rendered: Rendered) -> None:
    """SUMMIT_HOST_API_ADDRESS names the Service (every replica serves the host API, so a
    plugin keeps it when the replica that started it goes away); the orchestrator resolves
    it to the cluster IP it tells plugins, which get no DNS."""
    (container,) = pod_spec(rendered.component("orchestrator"))["containers"]
    env = env_of(container)
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    service = rendered.one("Service", f"{RELEASE}")
    [host_port] = [p for p in service["spec"]["ports"] if p["name"] == "host-api"]
    address = rendered.one("ConfigMap")["data"]["SUMMIT_HOST_API_ADDRESS"]
    assert address == f"{RELEASE}.{service['metadata']['namespace']}.svc:{host_port['port']}"


# -- RBAC, the plugin namespace and its network ------------------------------------------------


def test_rbac_grants_only_what_the_runtime_uses_in_the_plugin_namespace(
    rendered: Rendered,
) -> None:
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        assert not rendered.of_kind(kind)
    role = rendered.one("Role")
    assert role["metadata"]["namespace"] == rendered.plugin_namespace
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == PLUGIN_RBAC
    assert not any("*" in verbs for verbs in granted.values())

    binding = rendered.one("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = rendered.one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert (
        pod_spec(rendered.component("orchestrator"))["serviceAccountName"]
        == (account["metadata"]["name"])
    )


def test_plugin_namespace_enforces_the_restricted_standard(rendered: Rendered) -> None:
    namespace = rendered.one("Namespace")
    assert namespace["metadata"]["name"] == rendered.plugin_namespace
    assert rendered.plugin_namespace != NAMESPACE
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


def test_plugin_namespace_denies_by_default(rendered: Rendered) -> None:
    policies = {
        p["metadata"]["name"]: p
        for p in rendered.of_kind("NetworkPolicy")
        if p["metadata"]["namespace"] == rendered.plugin_namespace
    }
    deny = policies.pop("default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    # What the other policy there opens: the plugin port to the orchestrator and worker
    # pods, and the host API port of the orchestrator pods; no DNS, nothing else.
    orchestrator = rendered.component("orchestrator")
    orchestrator_labels = orchestrator["spec"]["template"]["metadata"]["labels"]
    host_api_port = rendered.merged["orchestrator"]["hostApiPort"]
    plugin_port = rendered.merged["plugins"]["port"]
    (allow,) = policies.values()
    (ingress,) = allow["spec"]["ingress"]
    (egress,) = allow["spec"]["egress"]
    assert ingress["ports"] == [{"port": plugin_port, "protocol": "TCP"}]
    assert egress["ports"] == [{"port": host_api_port, "protocol": "TCP"}]
    for rule, peers in ((ingress, ingress["from"]), (egress, egress["to"])):
        (peer,) = peers
        assert peer["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": NAMESPACE
        }
        assert selects(peer["podSelector"]["matchLabels"], orchestrator_labels), rule
    for component in ("postgresql", "redis"):
        for workload in rendered.workloads():
            if workload["metadata"]["labels"]["app.kubernetes.io/component"] == component:
                labels = workload["spec"]["template"]["metadata"]["labels"]
                assert not selects(ingress["from"][0]["podSelector"]["matchLabels"], labels)


def test_orchestrator_network_is_closed_but_for_what_it_needs(rendered: Rendered) -> None:
    policy = rendered.one("NetworkPolicy", RELEASE)["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    labels = rendered.component("orchestrator")["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["podSelector"]["matchLabels"], labels)
    host_api_rule = next(
        r for r in policy["ingress"] if r["ports"] == [{"port": "host-api", "protocol": "TCP"}]
    )
    assert host_api_rule["from"] == [
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": rendered.plugin_namespace}
            }
        }
    ]
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule.get("ports", [])}
    assert rendered.merged["plugins"]["port"] in egress_ports
    assert 53 in egress_ports
    internet = rendered.merged["networkPolicy"]["egress"]["internet"]
    open_blocks = [
        peer["ipBlock"]
        for rule in policy["egress"]
        for peer in rule.get("to", [])
        if "ipBlock" in peer and not rule.get("ports")
    ]
    if internet["enabled"] and not internet["ports"]:
        assert {"10.0.0.0/8", "169.254.0.0/16"} <= set(open_blocks[0]["except"])
    # The databases the chart runs accept only the orchestrator and the worker.
    for component in ("postgresql", "redis"):
        if rendered.merged[component]["enabled"]:
            db_policy = rendered.one("NetworkPolicy", f"{RELEASE}-{component}")["spec"]
            assert db_policy["egress"] == []
            (peer,) = db_policy["ingress"][0]["from"]
            assert peer["podSelector"]["matchExpressions"][0]["values"] == [
                "orchestrator",
                "worker",
            ]


# -- Settings and secrets ----------------------------------------------------------------------


def test_settings_agree_with_the_objects_they_describe(rendered: Rendered) -> None:
    data = rendered.one("ConfigMap")["data"]
    orchestrator = rendered.component("orchestrator")
    labels = orchestrator["spec"]["template"]["metadata"]["labels"]
    selector = dict(
        pair.split("=", 1) for pair in data["SUMMIT_KUBE_ORCHESTRATOR_LABELS"].split(",")
    )
    assert selects(selector, labels)
    assert selector["app.kubernetes.io/instance"] == RELEASE
    for workload in rendered.workloads():
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        # The worker calls plugins too; the databases never do.
        assert selects(selector, pod_labels) is (component in {"orchestrator", "worker"})

    assert data["SUMMIT_INSTANCE"] == RELEASE
    assert data["SUMMIT_RUNTIME"] == "kubernetes"
    assert data["SUMMIT_KUBE_ORCHESTRATOR_NAMESPACE"] == NAMESPACE
    assert data["SUMMIT_KUBE_NAMESPACE"] == rendered.one("Role")["metadata"]["namespace"]
    (container,) = pod_spec(orchestrator)["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(data["SUMMIT_HOST_API_PORT"]) == ports["host-api"]
    assert int(data["SUMMIT_KUBE_PLUGIN_PORT"]) == rendered.merged["plugins"]["port"]
    worker_on = bool(rendered.merged["worker"]["enabled"])
    assert data["SUMMIT_EMBEDDED_WORKER"] == ("false" if worker_on else "true")
    state_dir = data["SUMMIT_STATE_DIR"]
    for workload in rendered.workloads():
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        if component in {"orchestrator", "worker"}:
            (main,) = pod_spec(workload)["containers"]
            assert state_dir in {m["mountPath"] for m in main["volumeMounts"]}
            assert main["envFrom"] == [
                {"configMapRef": {"name": rendered.one("ConfigMap")["metadata"]["name"]}}
            ]


def test_the_orchestrator_accepts_the_settings(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap, with stand-ins for the secret values, is read by the real Settings."""
    from orchestrator.config import load_settings
    from orchestrator.runtime.kubernetes import KubernetesRuntime
    from orchestrator.runtime.select import make_backend

    data = rendered.one("ConfigMap")["data"]
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SUMMIT_DATABASE_URL", "postgresql+psycopg://u:p@db:5432/summit")
    monkeypatch.setenv("SUMMIT_ADMIN_TOKEN", "a-token-that-is-not-the-default")
    settings = load_settings()
    assert settings.runtime == "kubernetes"
    assert settings.kube_namespace == rendered.plugin_namespace
    assert settings.kube_orchestrator_namespace == NAMESPACE
    assert settings.host_api_port == rendered.merged["orchestrator"]["hostApiPort"]
    assert settings.host_api_address == data["SUMMIT_HOST_API_ADDRESS"]
    assert settings.kube_image_pull_secrets == rendered.merged["plugins"]["imagePullSecrets"]
    classes = {k: v for k, v in rendered.merged["plugins"]["runtimeClasses"].items() if v}
    assert settings.kube_runtime_classes == [f"{k}={v}" for k, v in sorted(classes.items())]
    assert settings.isolation == rendered.merged["plugins"]["isolation"]
    assert settings.isolation_unsigned == (rendered.merged["plugins"]["isolationUnsigned"] or None)
    assert settings.insecure_registries == rendered.merged["plugins"]["insecureRegistries"]
    assert settings.embedded_worker is not rendered.merged["worker"]["enabled"]

    # The Kubernetes runtime built from them (its API client is made on first use) writes
    # plugin NetworkPolicies that admit exactly the chart's orchestrator and worker pods.
    runtime, _images = make_backend(settings)
    assert isinstance(runtime, KubernetesRuntime)
    assert runtime.namespace == rendered.plugin_namespace
    assert runtime.orchestrator_namespace == NAMESPACE
    assert runtime.plugin_port == rendered.merged["plugins"]["port"]
    assert runtime.host_api_port == rendered.merged["orchestrator"]["hostApiPort"]
    assert runtime.runtime_classes == classes
    for workload in rendered.workloads():
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selects(runtime.orchestrator_labels, labels) is (
            component in {"orchestrator", "worker"}
        )


def test_secrets_come_from_the_chart_secret_or_an_existing_one(rendered: Rendered) -> None:
    auth = rendered.merged["auth"]
    secrets = {s["metadata"]["name"]: s for s in rendered.of_kind("Secret")}
    own = secrets.get(RELEASE)
    own_keys = set(own["data"]) if own else set()
    existing = {
        auth["existingSecret"],
        rendered.merged["externalDatabase"]["existingSecret"],
        rendered.merged["externalRedis"]["existingSecret"],
    } - {""}

    for workload in rendered.workloads():
        for container in containers(workload):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    continue
                where = f"{workload['metadata']['name']}: {env['name']}"
                if ref["name"] == RELEASE:
                    assert ref["key"] in own_keys, where
                else:
                    assert ref["name"] in existing, where

    (orchestrator,) = pod_spec(rendered.component("orchestrator"))["containers"]
    env = env_of(orchestrator)
    for name in ("SUMMIT_ADMIN_TOKEN", "SUMMIT_SECRETS_KEY", "SUMMIT_DATABASE_URL"):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    if auth["existingSecret"]:
        assert env["SUMMIT_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": auth["existingSecret"],
            "key": auth["adminTokenKey"],
        }
        assert not own_keys & {"admin-token", "secrets-key"}
    else:
        assert own is not None
        decoded = {k: _b64(v) for k, v in own["data"].items()}
        assert len(decoded["admin-token"]) >= 32
        Fernet(decoded["secrets-key"].encode())  # a usable key, or this raises
        keep = own["metadata"].get("annotations", {}).get("helm.sh/resource-policy")
        assert keep == ("keep" if auth["keepSecretOnUninstall"] else None)
    # Nothing secret sits in the ConfigMap.
    for name in rendered.one("ConfigMap")["data"]:
        assert not re.search(r"TOKEN|SECRETS_KEY|PASSWORD|DATABASE_URL|REDIS_URL", name), name


def test_trial_databases_are_wired_to_the_urls(by_file: dict[str, Rendered]) -> None:
    rendered = by_file["defaults"]
    data = {k: _b64(v) for k, v in rendered.one("Secret", RELEASE)["data"].items()}
    password = data["postgres-password"]
    assert data["database-url"] == (
        f"postgresql+psycopg://summit:{password}@{RELEASE}-postgresql:5432/summit"
    )
    assert data["redis-url"] == f"redis://:{data['redis-password']}@{RELEASE}-redis:6379/0"
    for component, key in (("postgresql", "postgres-password"), ("redis", "redis-password")):
        workload = rendered.component(component)
        service = rendered.one("Service", workload["metadata"]["name"])
        assert workload["spec"]["serviceName"] == service["metadata"]["name"]
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selects(service["spec"]["selector"], pod_labels)
        refs = [
            e["valueFrom"]["secretKeyRef"]
            for e in pod_spec(workload)["containers"][0]["env"]
            if "valueFrom" in e
        ]
        assert {"name": RELEASE, "key": key} in refs
        assert workload["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]


def _b64(value: str) -> str:
    import base64

    return base64.b64decode(value).decode()


# -- The ci values files, each for what it is about ---------------------------------------------


def test_production_runs_a_worker_and_scrapes_metrics(by_file: dict[str, Rendered]) -> None:
    rendered = by_file["production-values.yaml"]
    assert not [w for w in rendered.workloads() if w["kind"] == "StatefulSet"]
    worker = rendered.component("worker")
    assert worker["spec"]["replicas"] == 2
    (container,) = pod_spec(worker)["containers"]
    assert container["command"][:2] == ["summit", "worker"]
    assert {"SUMMIT_REDIS_URL", "SUMMIT_DATABASE_URL"} <= set(env_of(container))
    assert rendered.one("ConfigMap")["data"]["SUMMIT_EMBEDDED_WORKER"] == "false"
    worker_policy = rendered.one("NetworkPolicy", f"{RELEASE}-worker")["spec"]
    assert worker_policy["ingress"] == []
    monitor = rendered.one("ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    service = rendered.one("Service", RELEASE)
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (orchestrator,) = pod_spec(rendered.component("orchestrator"))["containers"]
    assert "@sha256:" in orchestrator["image"]
    assert env_of(orchestrator)["SUMMIT_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "summit-database",
        "key": "url",
    }


def test_gvisor_tier_gets_its_runtime_class(by_file: dict[str, Rendered]) -> None:
    rendered = by_file["gvisor-values.yaml"]
    runtime_class = rendered.one("RuntimeClass")
    assert runtime_class["metadata"]["name"] == "gvisor"
    assert runtime_class["handler"] == "runsc"
    data = rendered.one("ConfigMap")["data"]
    assert data["SUMMIT_KUBE_RUNTIME_CLASSES"] == "gvisor=gvisor"
    assert data["SUMMIT_ISOLATION_UNSIGNED"] == "gvisor"
    assert not by_file["defaults"].of_kind("RuntimeClass")


def test_ingress_routes_only_the_rest_api(by_file: dict[str, Rendered]) -> None:
    rendered = by_file["ingress-values.yaml"]
    ingress = rendered.one("Ingress")
    backends = [
        path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends == [{"name": RELEASE, "port": {"name": "http"}}]
    assert ingress["spec"]["tls"][0]["secretName"] == "summit-tls"
    assert "https://summit.example.com/" in rendered.notes
    assert not by_file["defaults"].of_kind("Ingress")
    # Browsers reach the UI over HTTPS there, though the pods see plain HTTP.
    assert rendered.one("ConfigMap")["data"]["SUMMIT_UI_SECURE_COOKIES"] == "true"
    assert "SUMMIT_UI_SECURE_COOKIES" not in by_file["defaults"].one("ConfigMap")["data"]


def test_notes_tell_how_to_reach_the_api_and_read_the_token(by_file: dict[str, Rendered]) -> None:
    notes = by_file["defaults"].notes
    assert f"port-forward service/{RELEASE} 8700:8700" in notes
    assert "jsonpath='{.data.admin-token}'" in notes
    assert "summit-plugin publish" in notes
    assert "get secret summit-keys" in by_file["production-values.yaml"].notes


# -- Refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCont": 3}, "at '': additional properties 'replicaCont' not allowed"),
        (
            {"orchestrator": {"replicaCont": 3}},
            "at '/orchestrator': additional properties 'replicaCont' not allowed",
        ),
        (
            {"plugins": {"networkPolicy": {"enable": False}}},
            "at '/plugins/networkPolicy': additional properties 'enable' not allowed",
        ),
        (
            {"orchestrator": {"replicaCount": "two"}},
            "at '/orchestrator/replicaCount': got string, want integer",
        ),
        ({"orchestrator": {"replicaCount": 0}}, "at '/orchestrator/replicaCount': minimum"),
        (
            {"plugins": {"isolation": "kata"}},
            "at '/plugins/isolation': value must be one of 'runc', 'gvisor'",
        ),
        (
            {"orchestrator": {"podAntiAffinity": "sometimes"}},
            "at '/orchestrator/podAntiAffinity': value must be one of",
        ),
        ({"orchestrator": {"port": 70000}}, "at '/orchestrator/port': maximum"),
        (
            # null removes a default in Helm: a limit cannot be taken away.
            {"orchestrator": {"resources": {"limits": {"ephemeral-storage": None}}}},
            "at '/orchestrator/resources/limits': missing property 'ephemeral-storage'",
        ),
        ({"auth": {"secretsKey": "too-short"}}, "at '/auth/secretsKey'"),
        (
            {"orchestrator": {"extraConfig": {"rate_limit": "1"}}},
            "at '/orchestrator/extraConfig': additional properties 'rate_limit' not allowed",
        ),
    ],
    ids=[
        "typo-top",
        "typo-nested",
        "typo-deep",
        "wrong-type",
        "below-minimum",
        "bad-enum",
        "bad-enum-affinity",
        "port-range",
        "limit-missing",
        "bad-fernet-key",
        "lower-case-setting",
    ],
)
def test_schema_refuses_bad_values(chart: helm.Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(refused.value)
    assert "values don't meet the specifications of the schema" in str(refused.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"postgresql": {"enabled": False}}, "summit: no database"),
        (
            {"redis": {"enabled": False}, "worker": {"enabled": True}},
            "summit: Redis is needed by the worker",
        ),
        (
            {"plugins": {"isolationUnsigned": "gvisor"}},
            "plugins.runtimeClasses.gvisor names no RuntimeClass",
        ),
        (
            {"orchestrator": {"extraConfig": {"ADMIN_TOKEN": "x"}}},
            "orchestrator.extraConfig.ADMIN_TOKEN is set by the chart itself",
        ),
        ({"orchestrator": {"hostApiPort": 8700}}, "must differ"),
    ],
    ids=["no-database", "worker-without-redis", "gvisor-without-class", "reserved", "same-port"],
)
def test_chart_refuses_inconsistent_values(
    chart: helm.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError) as refused:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(refused.value)


def test_one_replica_runs_without_redis(chart: helm.Chart) -> None:
    rendered = render(chart, {"redis": {"enabled": False}, "orchestrator": {"replicaCount": 1}})
    (container,) = pod_spec(rendered.component("orchestrator"))["containers"]
    assert "SUMMIT_REDIS_URL" not in env_of(container)


# -- The chart's own documentation -------------------------------------------------------------


def _schema_objects(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for key, child in node.items():
            yield from _schema_objects(child, f"{path}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _schema_objects(child, f"{path}/{index}")


def test_schema_is_closed_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    objects = dict(_schema_objects(schema))
    assert len(objects) > 40
    for path, node in objects.items():
        if path == "/properties/global":
            continue  # Helm's reserved key for a parent chart's shared values
        # Maps (labels, annotations, settings) are closed too: their keys match a pattern.
        assert node.get("additionalProperties") is False, path
        assert "properties" in node or "patternProperties" in node, path


def _value_paths(node: Any, prefix: str = "") -> Iterator[str]:
    """Leaf paths of values.yaml; maps and lists are leaves (documented as one parameter)."""
    for key, child in node.items():
        path = f"{prefix}{key}"
        if isinstance(child, dict) and child:
            yield from _value_paths(child, f"{path}.")
        else:
            yield path


def test_every_value_has_a_comment_and_a_readme_row() -> None:
    text = (CHART / "values.yaml").read_text()
    lines = text.splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"^\s*(- )?[A-Za-z][\w.-]*:(\s|$)", line)
        if not match or line.lstrip().startswith("#"):
            continue
        before = lines[number - 1].strip() if number else ""
        # A comment on the line above, or on the "- #" line that opens this list item.
        assert before.startswith(("#", "- #")), f"values.yaml:{number + 1} {line.strip()}"
    readme = (CHART / "README.md").read_text()
    rows = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    values = yaml.safe_load(text)
    missing = [p for p in _value_paths(values) if p not in rows]
    assert not missing, f"README.md has no row for {missing}"
    stale = [r for r in rows if r not in set(_value_paths(values))]
    assert not stale, f"README.md documents values that do not exist: {stale}"
