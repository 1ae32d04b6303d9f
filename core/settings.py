"""The one place that reads LoopLlama's configuration from the environment.

Every process (API, worker, `loopllama dev`) builds a `Settings` once at start-up and
passes it down; nothing else calls `os.environ`.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.model_routing import (
    ANTHROPIC,
    OFFLINE,
    OPENAI,
    PROVIDER_NAME,
    RESERVED_PROVIDER_NAMES,
    route,
    unconfigured,
    unroutable,
)

DEFAULT_NAMESPACE = "default"
DEFAULT_TASK_QUEUE = "loopllama"
DEFAULT_DATA_DIR = ".loopllama"
BLOB_SUBDIR = "blobs"
DEFAULT_RETENTION_DAYS = 30
DEFAULT_WORKER_MAX_ACTIVITIES = 1000
# How long `loopllama api` and `worker` keep trying to reach Temporal at start-up.
DEFAULT_TEMPORAL_WAIT_SECONDS = 30.0
API_KEY_FILE = "api-key"
WEBHOOK_KEY_FILE = "webhook-key"
# Where `loopllama dev` serves Temporal unless told otherwise.
EMBEDDED_ADDRESS = "127.0.0.1:7233"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
# The worker's metrics endpoint has no authentication: loopback unless told otherwise.
DEFAULT_WORKER_METRICS_HOST = "127.0.0.1"

# A host name or an IPv4/IPv6 address (no port).
_HOST = re.compile(r"^(?:[A-Za-z0-9.\-]+|[0-9A-Fa-f:.]+)$")
# host:port, or [IPv6]:port; the port 1-65535.
_HOST_PORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):(\d{1,5})$")


class SettingsError(ValueError):
    """A configuration value is missing or unsafe; the message says what to set."""


@dataclass(frozen=True)
class Secret:
    """A string that never shows itself in a repr, a log line or a traceback."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


@dataclass(frozen=True)
class ProviderEndpoint:
    """One named OpenAI-compatible endpoint of LOOPLLAMA_PROVIDERS, with its key from
    LOOPLLAMA_PROVIDER_<NAME>_API_KEY (none: local servers such as Ollama need none)."""

    name: str
    base_url: str
    api_key: Secret | None = None

    @property
    def key_setting(self) -> str:
        """The environment variable that holds this endpoint's key."""
        return provider_key_setting(self.name)


@dataclass(frozen=True)
class TemporalTls:
    """Files for a TLS connection to Temporal (paths checked readable at start)."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    # The name the server's certificate is for, when it is not the address's host.
    server_name: str | None = None


@dataclass(frozen=True)
class Settings:
    """Configuration shared by the API, the worker and `loopllama dev`."""

    api_keys: tuple[Secret, ...] = ()
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    # None means "run the embedded dev server" (only `loopllama dev` can do that).
    temporal_address: str | None = None
    temporal_namespace: str = DEFAULT_NAMESPACE
    temporal_task_queue: str = DEFAULT_TASK_QUEUE
    anthropic_api_key: Secret | None = None
    anthropic_base_url: str | None = None
    openai_api_key: Secret | None = None
    openai_base_url: str | None = None
    # Named OpenAI-compatible endpoints (LOOPLLAMA_PROVIDERS); the API and every worker
    # need the same.
    providers: tuple[ProviderEndpoint, ...] = ()
    smtp_url: Secret | None = None
    smtp_from: str = "loopllama@localhost"
    http_allowlist: tuple[str, ...] = ()
    # Where large payloads live (core/blob_store.py); None: `<data_dir>/blobs`.
    blob_dir_override: Path | None = None
    # How long Temporal keeps closed runs; namespaces LoopLlama creates get this.
    retention_days: int = DEFAULT_RETENTION_DAYS
    # Cache breakpoints on Claude calls (LOOPLLAMA_PROMPT_CACHE=off sends none).
    prompt_cache: bool = True
    # Derives each workflow's webhook signing secret (core/webhook_secrets.py); the API
    # and every worker need the same one.
    webhook_key: Secret | None = None
    # Each base64 of 32 bytes; the first encrypts, all decrypt (core/encryption.py).
    encryption_keys: tuple[Secret, ...] = ()
    # Activities one worker runs at once. Model and tool calls mostly wait on the
    # network, so this is far above the Temporal SDK's default of 100.
    worker_max_activities: int = DEFAULT_WORKER_MAX_ACTIVITIES
    # Model calls per second, by model name (LOOPLLAMA_MODEL_RATE_LIMITS); the API and
    # every worker need the same (see `model_task_queue`).
    model_rate_limits: tuple[tuple[str, float], ...] = ()
    # A TLS cluster (mTLS certificates, a private CA) or Temporal Cloud (an API key).
    temporal_tls: TemporalTls = field(default_factory=TemporalTls)
    temporal_api_key: Secret | None = None
    # Browser origins (the Temporal UI) allowed to call /codec/*.
    codec_cors_origins: tuple[str, ...] = ()
    # Seconds `api`, `worker` (and `dev` on TEMPORAL_ADDRESS) wait for Temporal at start.
    temporal_wait: float = DEFAULT_TEMPORAL_WAIT_SECONDS
    # Where OpenTelemetry spans go over OTLP/HTTP (core/tracing.py); None: no tracing.
    otel_traces_endpoint: str | None = None
    # OTEL_SERVICE_NAME; None: loopllama-api or loopllama-worker, by process.
    otel_service_name: str | None = None
    # LOOPLLAMA_LOG_FORMAT / LOOPLLAMA_LOG_LEVEL (core/logs.py).
    log_format: str = "text"
    log_level: str = "info"
    # Where a worker serves the Temporal SDK's Prometheus metrics; None: not served.
    worker_metrics_port: int | None = None
    worker_metrics_host: str = DEFAULT_WORKER_METRICS_HOST

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables, refusing malformed values."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        address = get("TEMPORAL_ADDRESS")
        if address is not None and not _is_host_port(address):
            raise SettingsError(
                f"TEMPORAL_ADDRESS must be host:port (for example 127.0.0.1:7233), got {address!r}."
            )
        namespace = get("TEMPORAL_NAMESPACE") or DEFAULT_NAMESPACE
        task_queue = get("TEMPORAL_TASK_QUEUE") or DEFAULT_TASK_QUEUE
        base_url = get("ANTHROPIC_BASE_URL")
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            raise SettingsError(
                f"ANTHROPIC_BASE_URL must start with http:// or https://, got {base_url!r}."
            )
        smtp_url = get("LOOPLLAMA_SMTP_URL")
        if smtp_url is not None and not smtp_url.startswith(("smtp://", "smtps://")):
            raise SettingsError(
                "LOOPLLAMA_SMTP_URL must look like smtp://user:pass@host:587 or "
                "smtps://user:pass@host:465."
            )
        anthropic_key = get("ANTHROPIC_API_KEY")
        openai_key = get("OPENAI_API_KEY")
        openai_url = get("OPENAI_BASE_URL")
        if openai_url is not None and not openai_url.startswith(("http://", "https://")):
            raise SettingsError(
                f"OPENAI_BASE_URL must start with http:// or https://, got {openai_url!r}."
            )
        retention = get("LOOPLLAMA_RETENTION_DAYS") or str(DEFAULT_RETENTION_DAYS)
        if not retention.isdigit() or not 1 <= int(retention) <= 3650:
            raise SettingsError(
                f"LOOPLLAMA_RETENTION_DAYS must be a whole number of days from 1 to 3650, "
                f"got {retention!r}."
            )
        blob_dir = get("LOOPLLAMA_BLOB_DIR")
        prompt_cache = parse_switch("LOOPLLAMA_PROMPT_CACHE", get("LOOPLLAMA_PROMPT_CACHE"))
        webhook_key = get("LOOPLLAMA_WEBHOOK_KEY")
        encryption_keys = parse_encryption_keys(get("LOOPLLAMA_ENCRYPTION_KEY"))
        max_activities = get("LOOPLLAMA_WORKER_MAX_ACTIVITIES") or str(
            DEFAULT_WORKER_MAX_ACTIVITIES)
        if not (max_activities.isascii() and max_activities.isdigit()) or not (
                1 <= int(max_activities) <= 10_000):
            raise SettingsError(
                "LOOPLLAMA_WORKER_MAX_ACTIVITIES must be a whole number from 1 to 10000, got "
                f"{max_activities!r}."
            )
        if webhook_key is not None and len(webhook_key) < 32:
            raise SettingsError(
                "LOOPLLAMA_WEBHOOK_KEY must be at least 32 characters of random text, e.g. "
                "from `python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
            )
        log_format = parse_choice("LOOPLLAMA_LOG_FORMAT", get("LOOPLLAMA_LOG_FORMAT"), LOG_FORMATS)
        log_level = parse_choice("LOOPLLAMA_LOG_LEVEL", get("LOOPLLAMA_LOG_LEVEL"), LOG_LEVELS,
                                 default="info")
        metrics_port = parse_port("LOOPLLAMA_WORKER_METRICS_PORT",
                                  get("LOOPLLAMA_WORKER_METRICS_PORT"))
        metrics_host = get("LOOPLLAMA_WORKER_METRICS_HOST")
        if metrics_host is not None and (metrics_port is None or not _HOST.match(metrics_host)):
            raise SettingsError(
                "LOOPLLAMA_WORKER_METRICS_HOST must be a host name or IP address to bind "
                "(for example 0.0.0.0), and needs LOOPLLAMA_WORKER_METRICS_PORT; "
                f"got {metrics_host!r}."
            )
        temporal_wait = parse_seconds("LOOPLLAMA_TEMPORAL_WAIT", get("LOOPLLAMA_TEMPORAL_WAIT"),
                                      DEFAULT_TEMPORAL_WAIT_SECONDS)
        return cls(
            api_keys=parse_api_keys(get("LOOPLLAMA_API_KEY")),
            data_dir=Path(get("LOOPLLAMA_DATA_DIR") or DEFAULT_DATA_DIR),
            temporal_address=address,
            temporal_namespace=namespace,
            temporal_task_queue=task_queue,
            anthropic_api_key=Secret(anthropic_key) if anthropic_key else None,
            anthropic_base_url=base_url,
            openai_api_key=Secret(openai_key) if openai_key else None,
            openai_base_url=openai_url,
            providers=parse_providers(get("LOOPLLAMA_PROVIDERS"), get),
            smtp_url=Secret(smtp_url) if smtp_url else None,
            smtp_from=get("LOOPLLAMA_SMTP_FROM") or "loopllama@localhost",
            http_allowlist=tuple(
                h.strip().lower()
                for h in (get("LOOPLLAMA_HTTP_ALLOWLIST") or "").split(",")
                if h.strip()
            ),
            blob_dir_override=Path(blob_dir) if blob_dir else None,
            retention_days=int(retention),
            prompt_cache=prompt_cache,
            webhook_key=Secret(webhook_key) if webhook_key else None,
            encryption_keys=encryption_keys,
            worker_max_activities=int(max_activities),
            model_rate_limits=parse_rate_limits(get("LOOPLLAMA_MODEL_RATE_LIMITS")),
            temporal_tls=parse_temporal_tls(get),
            temporal_api_key=Secret(api_key) if (api_key := get("TEMPORAL_API_KEY")) else None,
            codec_cors_origins=tuple(
                origin.strip().rstrip("/")
                for origin in (get("LOOPLLAMA_CODEC_CORS_ORIGINS") or "").split(",")
                if origin.strip()
            ),
            temporal_wait=temporal_wait,
            otel_traces_endpoint=parse_otel_traces_endpoint(get),
            otel_service_name=get("OTEL_SERVICE_NAME"),
            log_format=log_format,
            log_level=log_level,
            worker_metrics_port=metrics_port,
            worker_metrics_host=metrics_host or DEFAULT_WORKER_METRICS_HOST,
        )

    def model_providers(self) -> tuple[str, ...]:
        """The providers this deployment has: Anthropic and the offline model always (a
        worker without ANTHROPIC_API_KEY fails a Claude step at once, saying so), OpenAI
        with OPENAI_API_KEY or OPENAI_BASE_URL, and every LOOPLLAMA_PROVIDERS entry."""
        openai = (OPENAI,) if self.openai_api_key or self.openai_base_url else ()
        return (ANTHROPIC, *openai, *(p.name for p in self.providers), OFFLINE)

    def model_problem(self, model: str) -> str | None:
        """Why this deployment cannot serve `model` (no provider has it), or None."""
        found = route(model)
        if found is None:
            return unroutable(model)
        available = self.model_providers()
        if found.provider not in available:
            return unconfigured(model, found.provider, available)
        return None

    def model_task_queue(self, model: str) -> str | None:
        """The task queue whose calls to `model` are held to its rate limit (Temporal's
        task-queue rate limiting), or None when the model has no limit."""
        if model not in dict(self.model_rate_limits):
            return None
        return f"{self.temporal_task_queue}.model.{model}"

    @property
    def encryption_key_bytes(self) -> tuple[bytes, ...]:
        """The encryption keys, raw (checked when the settings were read)."""
        return tuple(base64.b64decode(key.value) for key in self.encryption_keys)

    @property
    def worker_metrics_address(self) -> str | None:
        """`host:port` for the worker's Prometheus endpoint, or None when it is off."""
        if self.worker_metrics_port is None:
            return None
        host = self.worker_metrics_host
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self.worker_metrics_port}"

    @property
    def blob_dir(self) -> Path:
        """The directory of large payloads; every API and worker process must share it."""
        return self.blob_dir_override or self.data_dir / BLOB_SUBDIR

    def require_api_keys(self) -> None:
        """Refuse to serve the API without at least one key."""
        if not self.api_keys:
            raise SettingsError(
                "LOOPLLAMA_API_KEY is not set. Set it to one key or a comma-separated list "
                "of keys; clients send one as 'Authorization: Bearer <key>'."
            )

    def require_temporal_address(self) -> str:
        """The address of an existing Temporal server, for `loopllama api` and `worker`."""
        if self.temporal_address is None:
            raise SettingsError(
                "TEMPORAL_ADDRESS is not set. Point it at a Temporal frontend "
                "(for example 127.0.0.1:7233), or use `loopllama dev` to run everything "
                "on an embedded server."
            )
        return self.temporal_address


def _is_host_port(value: str) -> bool:
    match = _HOST_PORT.match(value)
    return match is not None and 1 <= int(match.group(1)) <= 65535


_SWITCH_VALUES = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


def parse_switch(name: str, raw: str | None, default: bool = True) -> bool:
    """An on/off variable: on/true/1 or off/false/0 (any case); unset means `default`."""
    if raw is None:
        return default
    value = _SWITCH_VALUES.get(raw.lower())
    if value is None:
        raise SettingsError(f"{name} must be on or off (or true/false, 1/0), got {raw!r}.")
    return value


def parse_choice(name: str, raw: str | None, choices: tuple[str, ...],
                 default: str | None = None) -> str:
    """One of `choices` (any case); unset means `default`, else the first choice."""
    if raw is None:
        return default or choices[0]
    if raw.lower() not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}.")
    return raw.lower()


def parse_port(name: str, raw: str | None) -> int | None:
    """A TCP port from 1 to 65535; unset means None."""
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 65535:
        raise SettingsError(f"{name} must be a port number from 1 to 65535, got {raw!r}.")
    return int(raw)


def parse_seconds(name: str, raw: str | None, default: float) -> float:
    """A duration in seconds from 0 to 3600 (fractions allowed); unset means `default`."""
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:  # also refuses nan
        raise SettingsError(f"{name} must be a number of seconds from 0 to 3600, got {raw!r}.")
    return value


_RATE = re.compile(r"^(?P<model>[A-Za-z0-9][A-Za-z0-9.\-_/:@+]{0,99})=(?P<count>\d+(?:\.\d+)?)"
                   r"/(?P<unit>s|m)$")


def provider_key_setting(name: str) -> str:
    """LOOPLLAMA_PROVIDER_<NAME>_API_KEY for the provider `name`."""
    return f"LOOPLLAMA_PROVIDER_{name.upper().replace('-', '_')}_API_KEY"


def parse_providers(raw: str | None,
                    get: Callable[[str], str | None]) -> tuple[ProviderEndpoint, ...]:
    """`local=http://127.0.0.1:11434/v1,router=https://…/v1` as endpoints, each with its
    key from `get` (the environment)."""
    endpoints: dict[str, ProviderEndpoint] = {}
    for entry in (raw or "").split(","):
        if not entry.strip():
            continue
        name, sep, url = (part.strip() for part in entry.partition("="))
        if not sep or not PROVIDER_NAME.match(name) or not url.startswith(
                ("http://", "https://")):
            raise SettingsError(
                "LOOPLLAMA_PROVIDERS must look like local=http://127.0.0.1:11434/v1,"
                "router=https://gateway.example.com/v1 (a name of lowercase letters, digits, "
                f"'-' and '_', then '=' and an http(s) base URL); got {entry.strip()!r}.")
        if name in RESERVED_PROVIDER_NAMES:
            raise SettingsError(
                f"LOOPLLAMA_PROVIDERS: {name!r} is a built-in provider's name; choose "
                "another (OpenAI itself is configured with OPENAI_API_KEY and "
                "OPENAI_BASE_URL).")
        if name in endpoints:
            raise SettingsError(f"LOOPLLAMA_PROVIDERS names {name!r} twice.")
        key = get(provider_key_setting(name))
        endpoints[name] = ProviderEndpoint(name, url.rstrip("/"),
                                           Secret(key) if key else None)
    return tuple(endpoints.values())


def parse_rate_limits(raw: str | None) -> tuple[tuple[str, float], ...]:
    """`claude-sonnet-4-6=5/s,claude-opus-4-6=30/m` as (model, calls per second)."""
    limits: dict[str, float] = {}
    for part in (raw or "").split(","):
        if not part.strip():
            continue
        match = _RATE.match(part.strip())
        count = float(match.group("count")) if match else 0.0
        if match is None or count <= 0:
            raise SettingsError(
                "LOOPLLAMA_MODEL_RATE_LIMITS must look like 'claude-sonnet-4-6=5/s' or "
                f"'claude-opus-4-6=30/m' (comma-separated, positive rates), got {part!r}."
            )
        limits[match.group("model")] = count / (60.0 if match.group("unit") == "m" else 1.0)
    return tuple(limits.items())


def parse_temporal_tls(get: Callable[[str], str | None]) -> TemporalTls:
    """TEMPORAL_TLS_CERT, TEMPORAL_TLS_KEY, TEMPORAL_TLS_CA, TEMPORAL_TLS_SERVER_NAME."""
    paths: dict[str, Path | None] = {}
    for name, value in (("CERT", get("TEMPORAL_TLS_CERT")), ("KEY", get("TEMPORAL_TLS_KEY")),
                        ("CA", get("TEMPORAL_TLS_CA"))):
        if value is not None and not os.access(value, os.R_OK):
            raise SettingsError(
                f"TEMPORAL_TLS_{name} is {value!r}, which is not a readable file; give the "
                "path of a PEM file."
            )
        paths[name] = Path(value) if value is not None else None
    if (paths["CERT"] is None) != (paths["KEY"] is None):
        raise SettingsError(
            "TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together (a client certificate and "
            "its private key); set both or neither."
        )
    return TemporalTls(cert=paths["CERT"], key=paths["KEY"], ca=paths["CA"],
                       server_name=get("TEMPORAL_TLS_SERVER_NAME"))


def parse_encryption_keys(raw: str | None) -> tuple[Secret, ...]:
    """LOOPLLAMA_ENCRYPTION_KEY: comma-separated base64 keys of 32 bytes each."""
    keys = tuple(Secret(part.strip()) for part in (raw or "").split(",") if part.strip())
    for position, key in enumerate(keys, start=1):
        try:
            size = len(base64.b64decode(key.value, validate=True))
        except ValueError:
            size = -1
        if size != 32:
            raise SettingsError(
                f"LOOPLLAMA_ENCRYPTION_KEY entry {position} is not base64 of 32 bytes; make one "
                "with `python -c 'import os, base64; print(base64.b64encode(os.urandom(32))"
                ".decode())'`."
            )
    return keys


def parse_api_keys(raw: str | None) -> tuple[Secret, ...]:
    """Split a comma-separated list of API keys, dropping blanks and duplicates."""
    if not raw:
        return ()
    keys: list[str] = []
    for part in raw.split(","):
        key = part.strip()
        if not key:
            continue
        if any(ch.isspace() for ch in key):
            raise SettingsError("LOOPLLAMA_API_KEY entries must not contain spaces.")
        if key not in keys:
            keys.append(key)
    return tuple(Secret(k) for k in keys)


def parse_otel_traces_endpoint(get: Callable[[str], str | None]) -> str | None:
    """The OTLP/HTTP URL for spans, from the standard OTEL_* variables.

    None (no tracing) unless OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as is) or
    OTEL_EXPORTER_OTLP_ENDPOINT (plus `/v1/traces`) is set, and also when
    OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true.
    """
    traces, base = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if traces is None and base is None:
        return None
    if (get("OTEL_SDK_DISABLED") or "").lower() == "true":
        return None
    exporter = (get("OTEL_TRACES_EXPORTER") or "otlp").lower()
    if exporter == "none":
        return None
    if exporter != "otlp":
        raise SettingsError(f"OTEL_TRACES_EXPORTER must be otlp or none, got {exporter!r}.")
    protocol = (get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf")
    if protocol != "http/protobuf":
        raise SettingsError(
            f"LoopLlama exports traces over OTLP/HTTP only (http/protobuf), got {protocol!r}; "
            "unset OTEL_EXPORTER_OTLP_PROTOCOL and point the endpoint at the collector's "
            "HTTP port (usually 4318)."
        )
    if traces is not None:
        name, endpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces
    else:  # the spec's rule: the signal's path goes after the base URL
        name, endpoint = "OTEL_EXPORTER_OTLP_ENDPOINT", f"{(base or '').rstrip('/')}/v1/traces"
    if not endpoint.startswith(("http://", "https://")):
        raise SettingsError(
            f"{name} must start with http:// or https:// (for example "
            f"http://127.0.0.1:4318), got {get(name)!r}."
        )
    return endpoint
