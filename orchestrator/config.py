"""All of the orchestrator's settings, read once from the environment (prefix ``SUMMIT_``)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from summit_sdk.client import DEFAULT_TOKEN

# The development default, the same one the SDK's REST client falls back to.
DEV_ADMIN_TOKEN = DEFAULT_TOKEN


def _list_setting(raw: Any) -> Any:
    """A list setting from the environment: JSON (``["a", "b"]``) or ``a,b`` text."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError(
                'expected a JSON list (["a", "b"]) or a comma-separated list (a,b)'
            ) from None
    return [part.strip() for part in text.split(",") if part.strip()]


# pydantic-settings decodes list fields as JSON only; NoDecode hands the raw text to the
# validator above, so both spellings the README promises are accepted.
ListSetting = Annotated[list[str], NoDecode, BeforeValidator(_list_setting)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SUMMIT_", extra="ignore")

    database_url: str = Field(
        "sqlite:///./summit.db", description="SQLAlchemy URL; SQLite file by default"
    )
    redis_url: str | None = Field(None, description="Redis URL; unset means in-process")
    admin_token: str = Field(DEV_ADMIN_TOKEN, description="Bearer token of the admin API")
    dev: bool = Field(
        False,
        description="Development mode: lets `summit serve` listen beyond loopback with the "
        "default admin token",
    )
    api_token_cache_s: float = Field(
        5.0,
        ge=0,
        description="How long a verified API token's role is trusted without reading the "
        "database again; a revocation reaches the other replicas within this time (0: read "
        "every time)",
    )
    instance: str = Field(
        "summit", description="Owner label put on every container so reconcile finds its own"
    )
    state_dir: Path = Field(Path(".summit"), description="Build contexts and plugin sockets")
    run_dir: Path | None = Field(
        None, description="Directory of per-container socket folders (default STATE_DIR/run)"
    )
    base_image: str = Field(
        "summit/plugin-python:latest", description="Image that source plugins are built on"
    )
    bundle_max_bytes: int = Field(50 * 1024 * 1024, description="Largest accepted bundle")
    config_max_bytes: int = Field(
        256 * 1024,
        ge=1,
        description="Largest plugin config (its JSON text, in bytes) an install or PUT config "
        "takes; above it the API answers 413 config_too_large",
    )
    require_signed: bool = False
    scan_fail_on: Literal["LOW", "MEDIUM", "HIGH", "never"] = Field(
        "HIGH",
        description="Install policy: refuse plugins (source or image) with scanner findings at "
        "or above this severity unless an admin overrides (never = report only)",
    )
    advisory_db: Path | None = Field(
        None, description="Folder of OSV advisory JSON files to check plugin requirements against"
    )
    auth_provider: str | None = Field(
        None,
        description="PLUGIN_ID[/NAME] of an auth_provider plugin that may authenticate admin "
        "API callers Summit does not know (X-API-Key or bearer), mapping them to a role",
    )
    secrets_key: str | None = Field(
        None,
        description="Fernet key that encrypts plugin secrets and UI sessions' tokens at rest, "
        "and signs UI session cookies; replicas must share it "
        "(default: generated once into STATE_DIR/secrets.key)",
    )
    egress_timeout_s: float = Field(30.0, description="Connect/read timeout of egress requests")
    egress_max_response_bytes: int = Field(
        10 * 1024 * 1024, description="Largest upstream answer the egress proxy passes on"
    )
    host_max_body_bytes: int = Field(
        1024 * 1024, description="Largest request body a plugin may send to the host API"
    )
    host_max_connections: int = Field(
        64,
        ge=1,
        description="Connections one plugin may hold open to its host API socket; more are "
        "closed as soon as they are accepted",
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Proxies whose X-Forwarded-For and X-Forwarded-Proto headers are believed: "
        "comma-separated addresses or networks, '*' for any (then only such proxies must "
        "reach the API). A request a TLS-terminating proxy forwarded then counts as HTTPS",
    )
    ui_secure_cookies: bool | None = Field(
        None,
        description="Mark the web UI's cookies Secure: true always (it is reached over HTTPS "
        "through a proxy that terminates TLS), false never; unset: when the request came "
        "over HTTPS, as seen through SUMMIT_FORWARDED_ALLOW_IPS",
    )
    api_max_connections: int | None = Field(
        None,
        ge=1,
        description="Connections the admin API port holds open at most, more are closed as "
        "soon as they are accepted (unset: no cap)",
    )
    http_max_head_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest request head (request line and headers) on every port the "
        "orchestrator listens on, host API sockets included; above it: 431 and close",
    )
    http_head_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Time a client has for a complete request head, from connecting or from "
        "the first byte of a later request; then 408 (if it sent anything) and close",
    )
    http_keep_alive_s: int = Field(
        5,
        ge=1,
        description="Idle time after a response before a connection is closed, on every port",
    )
    allow_private_targets: ListSetting = Field(default_factory=list)

    # Sandbox.
    plugin_user: str = Field("10001:10001", description="uid:gid every plugin runs as")
    pids_limit: int = 128
    nofile_limit: int = Field(
        1024,
        ge=64,
        description="Open files (RLIMIT_NOFILE, soft and hard) of every plugin container; "
        "keep it well below the orchestrator's own limit",
    )
    tmpfs_mb: int = 16
    tmpfs_inodes: int = Field(
        4096,
        ge=64,
        description="Files and folders a plugin may create in each of its tmpfs mounts "
        "(/tmp and its socket folder)",
    )
    log_max_size: str = "5m"
    default_memory_mb: int = 256
    default_cpu_percent: int = 50
    default_storage_mb: int = 100
    default_network_mbps: int = 10
    default_timeout_ms: int = 30000
    max_memory_mb: int = 4096
    max_cpu_percent: int = 400

    # Broker.
    rate_limit_requests: int = Field(
        100, description="Calls a plugin may receive per window (0 = unlimited)"
    )
    rate_limit_window_s: float = Field(900.0, description="Rate-limit window (sliding)")
    plugin_concurrency: int = Field(32, description="Calls in flight per plugin before 429")
    breaker_failures: int = Field(5, description="Consecutive failures that open the breaker")
    breaker_cooldown_s: float = Field(30.0, description="Open time before a half-open probe")
    max_request_bytes: int = Field(1024 * 1024, description="Largest execute request body")
    max_response_bytes: int = Field(1024 * 1024, description="Largest plugin answer")
    retry_attempts: int = Field(3, description="Attempts for calls to idempotent extensions")

    # Lifecycle timing.
    startup_timeout_s: float = Field(30.0, description="Time a plugin has to become healthy")
    shutdown_grace_s: float = Field(5.0, description="Time a plugin has to stop by itself")
    health_interval_s: float = Field(10.0, description="Period of health probes of ACTIVE plugins")
    health_failures: int = Field(3, description="Failed probes in a row that mark a plugin FAILED")
    restart_backoff_s: float = Field(1.0, description="First restart delay after a crash")
    restart_backoff_cap_s: float = 60.0
    crash_limit: int = Field(3, description="Crashes within CRASH_WINDOW_S that keep it FAILED")
    crash_window_s: float = 600.0

    # Jobs (async execute).
    job_ttl_s: float = Field(7 * 24 * 3600.0, description="How long finished jobs are kept")
    job_max_attempts: int = Field(3, ge=1, description="Attempts of a job before it fails")
    worker_concurrency: int = Field(4, ge=1, description="Jobs one worker runs at a time")
    worker_lease_s: float = Field(
        30.0, gt=0, description="A job whose worker stops renewing it this long is re-queued"
    )
    worker_grace_s: float = Field(
        30.0, description="Time jobs in flight get to finish when a worker stops"
    )
    embedded_worker: bool = Field(
        True, description="Also run jobs inside the orchestrator when REDIS_URL is set"
    )

    # Events and webhooks.
    replica: str | None = Field(
        None,
        description="Name of this orchestrator's delivery leases (default: host name and a "
        "hash of STATE_DIR, so a restart takes its own leases back)",
    )
    event_summary_interval_s: float = Field(
        60.0, gt=0, description="Period of the extension.executed and quota.rate_limited summaries"
    )
    event_retention_s: float = Field(
        30 * 24 * 3600.0,
        ge=0,
        description="Age after which events and finished deliveries are pruned (0 = keep all); "
        "dead letters and events still owed are kept",
    )
    event_prune_interval_s: float = Field(3600.0, gt=0, description="Period of that pruning")
    event_max_payload_bytes: int = Field(256 * 1024, description="Largest event payload")
    webhook_allow_private: ListSetting = Field(
        default_factory=list,
        description="Networks (CIDR) webhooks may target although loopback, private or "
        'link-local, e.g. ["127.0.0.0/8"] for a receiver on this host',
    )
    webhook_concurrency: int = Field(16, ge=1, description="Deliveries in flight per webhook")
    webhook_max_body_bytes: int = Field(1024 * 1024, description="Largest webhook request body")
    webhook_max_attempts: int = Field(8, ge=1, description="Default attempts per delivery")
    webhook_backoff_base_s: float = Field(1.0, gt=0, description="Default first retry wait")
    webhook_backoff_cap_s: float = Field(600.0, gt=0, description="Default longest retry wait")
    webhook_timeout_s: float = Field(10.0, gt=0, description="Default time a receiver has")
    webhook_pause_after: int = Field(
        10, ge=0, description="Dead letters in a row that pause a subscription (0 = never)"
    )
    delivery_lease_s: float = Field(30.0, gt=0, description="Lease on a delivery being sent")
    delivery_poll_s: float = Field(0.5, gt=0, description="Period of the due-delivery check")
    plugin_event_retry_s: float = Field(
        60.0, description="How long an event is retried to a plugin that is away"
    )

    # Scale-out: the container backend, isolation tiers, replicas.
    runtime: Literal["docker", "kubernetes"] = Field(
        "docker",
        description="Where plugin containers run: the local Docker Engine, or pods in a "
        "Kubernetes cluster (in-cluster configuration, or KUBECONFIG outside one)",
    )
    kube_namespace: str = Field("summit-plugins", description="Namespace of the plugin pods")
    kube_image_pull_secrets: ListSetting = Field(
        default_factory=list, description="imagePullSecrets names given to every plugin pod"
    )
    kube_runtime_classes: ListSetting = Field(
        default_factory=lambda: ["gvisor=gvisor"],
        description="ISOLATION=runtimeClassName pairs: the RuntimeClass a plugin pod of each "
        "isolation tier gets (a tier not named runs under the cluster's default)",
    )
    kube_orchestrator_namespace: str | None = Field(
        None,
        description="Namespace of the orchestrator pods, which plugin pods accept calls from "
        "and call the host API in (default: POD_NAMESPACE from the environment, else the "
        "service account's namespace)",
    )
    kube_orchestrator_labels: ListSetting = Field(
        default_factory=lambda: [
            "app.kubernetes.io/name=summit",
            "app.kubernetes.io/component=orchestrator",
        ],
        description="KEY=VALUE labels that select the orchestrator pods in the plugin pods' "
        "NetworkPolicy",
    )
    insecure_registries: ListSetting = Field(
        default_factory=lambda: ["127.0.0.1:5000", "localhost:5000"],
        description="OCI registries (host:port) read over plain HTTP instead of HTTPS",
    )
    kube_plugin_port: int = Field(8080, ge=1, le=65535, description="Port plugin pods serve on")
    host_api_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="TCP port the host API is also served on, for plugins that reach the "
        "orchestrator over a network (pods); unset: unix sockets only (Docker)",
    )
    host_api_address: str | None = Field(
        None,
        description="IP[:port] plugins are told to reach the host API at (plugins get no "
        "DNS); default: POD_IP from the environment and HOST_API_PORT",
    )
    isolation: Literal["runc", "gvisor"] = Field(
        "runc",
        description="Default isolation tier of plugin containers: runc (namespaces, seccomp) "
        "or gvisor (runsc, a user-space kernel between the plugin and the host's)",
    )
    isolation_unsigned: Literal["runc", "gvisor"] | None = Field(
        None,
        description="Isolation tier of plugins without a verified signature (unset: ISOLATION)",
    )
    leader_lease_s: float = Field(
        10.0,
        gt=0,
        description="Lease of the elected supervisor replica; another takes over when it is "
        "not renewed for this long",
    )
    leader_renew_s: float = Field(
        2.0, gt=0, description="Period at which the supervisor renews (and others try) the lease"
    )
    route_resync_s: float = Field(
        5.0,
        gt=0,
        description="Period of the full re-read of routes from the database (the safety net "
        "under the event stream that carries route changes between replicas)",
    )

    # Resource monitor.
    monitor_interval_s: float = Field(
        10.0, gt=0, description="Period of resource sampling of every running plugin"
    )
    monitor_cgroup_root: Path = Field(
        Path("/sys/fs/cgroup"),
        description="Where the host's cgroup tree is; an orchestrator in a container needs the "
        "host's /sys/fs/cgroup mounted read-only here, else usage comes from the runtime's "
        "stats (no CPU time)",
    )
    quota_policy: dict[str, Any] = Field(
        default_factory=dict,
        description="Default quota policy (JSON), rule by rule over the built-in defaults",
    )
    image_scan_max_bytes: int = Field(
        2 * 1024**3,
        ge=1,
        description="Largest image (unpacked) whose filesystem an install or a catalog publish "
        "reads to scan it; 413 image_too_large above",
    )
    catalog_rate_limit_requests: int = Field(
        600,
        ge=0,
        description="Catalog API requests per client (bearer token, else address) per window "
        "(0: no limit); 429 with Retry-After above",
    )
    catalog_rate_limit_window_s: float = Field(60.0, gt=0, description="The catalog's window")
    catalog_archive_max_bytes: int = Field(
        32 * 1024**3,
        ge=1,
        description="Largest catalog archive an import accepts (images included)",
    )
    catalog_url: str | None = Field(
        None,
        description="Base URL of the orchestrator whose catalog this one installs from "
        "(https://catalog.example.com); unset: its own. Installs and uninstalls of that "
        "catalog's plugins are reported to it, and this orchestrator's /v1/catalog routes "
        "answer 409 catalog_is_remote",
    )
    catalog_token: SecretStr | None = Field(
        None,
        description="API token of the remote catalog (role viewer is enough) that CATALOG_URL "
        "is read and reported to with",
    )
    graphql_introspection: bool | None = Field(
        None,
        description="GraphQL introspection (None: on with SUMMIT_DEV, off otherwise)",
    )
    graphql_max_depth: int = Field(10, ge=1, description="Deepest GraphQL selection accepted")
    graphql_max_aliases: int = Field(15, ge=1, description="Most aliases in one GraphQL document")
    graphql_max_tokens: int = Field(5000, ge=1, description="Most tokens in one GraphQL document")
    graphql_max_complexity: int = Field(
        10000, ge=1, description="Largest GraphQL cost (list fields count their limit)"
    )
    idle_pause_s: float = Field(
        300.0,
        ge=0,
        description="Freeze an ACTIVE plugin that has had no call and no event for this long "
        "(Docker pause); the next call or event resumes it. 0: never. Kubernetes cannot "
        "freeze a pod, so there plugins keep running",
    )

    @property
    def sockets_dir(self) -> Path:
        return self.run_dir or self.state_dir / "run"


class SettingsProblem(ValueError):
    """A setting from the environment is not usable; the message is one line naming it."""


def load_settings() -> Settings:
    """Read the settings, turning pydantic's report into one line per bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = "SUMMIT_" + ".".join(str(part) for part in error["loc"]).upper()
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{name}: {message}")
        raise SettingsProblem("; ".join(lines)) from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()
