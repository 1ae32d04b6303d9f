"""Structural checks for docker-compose.yml, Dockerfile and .dockerignore.

The build machines have no Docker engine, so the production-shaped stack is never started
in CI; these tests catch the mistakes that would only show up at `docker compose up`
(a dangling depends_on, clashing ports, an API and worker on different task queues, a
secret with a baked-in default, a command that is not a real console script).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"
SETTINGS_PY = ROOT / "core" / "settings.py"

EXPECTED_SERVICES = {"postgresql", "temporal", "temporal-ui", "api", "worker"}
TEMPORAL_SERVICE = "temporal"
TEMPORAL_PORT = 7233
TEMPORAL_CONNECTION_VARS = (
    "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_TASK_QUEUE",
    # A TLS cluster or Temporal Cloud.
    "TEMPORAL_TLS_CERT", "TEMPORAL_TLS_KEY", "TEMPORAL_TLS_CA", "TEMPORAL_TLS_SERVER_NAME",
    "TEMPORAL_API_KEY",
)
API_VARS = {"LOOPLLAMA_API_KEY", *TEMPORAL_CONNECTION_VARS}
WORKER_VARS = {
    *TEMPORAL_CONNECTION_VARS,
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "LOOPLLAMA_SMTP_URL",
    "LOOPLLAMA_SMTP_FROM",
    "LOOPLLAMA_HTTP_ALLOWLIST",
}
# Read by core/settings.py but deliberately left to its default in the containers
# (the image's working directory is the non-root user's writable home).
SETTINGS_NOT_IN_COMPOSE = {"LOOPLLAMA_DATA_DIR"}
SECRET_NAME = re.compile(r"KEY|PASSWORD|PWD|SECRET|TOKEN|SMTP_URL")
# The only secret allowed a literal default: the stack-local PostgreSQL password.
LOCAL_DB_PASSWORD_VARS = {"POSTGRES_PASSWORD", "POSTGRES_PWD"}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
INTERPOLATION = re.compile(
    r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}$"
)


# --- helpers -------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


def services() -> dict[str, dict[str, Any]]:
    found = load_compose().get("services")
    assert isinstance(found, dict) and found, "docker-compose.yml defines no services"
    return found


def service(name: str) -> dict[str, Any]:
    svc = services().get(name)
    assert isinstance(svc, dict), f"service {name!r} is missing"
    return svc


def environment(svc: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whichever of compose's two forms it uses."""
    raw = svc.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in raw)
        return {key: value for key, value in pairs}
    assert isinstance(raw, dict), f"environment must be a list or a mapping, got {raw!r}"
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def depends_on(svc: dict[str, Any]) -> list[str]:
    raw = svc.get("depends_on") or []
    return list(raw) if isinstance(raw, dict | list) else [raw]


def command_words(svc: dict[str, Any]) -> list[str]:
    raw = svc.get("command")
    assert raw, "service has no command"
    return shlex.split(raw) if isinstance(raw, str) else [str(word) for word in raw]


def option_value(words: list[str], option: str) -> str:
    for i, word in enumerate(words):
        if word == option and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(f"{option}="):
            return word.split("=", 1)[1]
    raise AssertionError(f"{option} not found in {words}")


def port_mappings(svc: dict[str, Any]) -> list[tuple[int | None, int]]:
    """(host port or None, container port) for each entry, short or long syntax."""
    mappings: list[tuple[int | None, int]] = []
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            published = entry.get("published")
            mappings.append((None if published is None else int(published), int(entry["target"])))
            continue
        text = str(entry).split("/", 1)[0]  # drop /tcp, /udp
        parts = text.rsplit(":", 2)  # [ip:]host:container, or container alone
        # A range ("8000-8001") gives each replica one port; the first stands for it.
        host = int(parts[-2].split("-", 1)[0]) if len(parts) >= 2 else None
        mappings.append((host, int(parts[-1])))
    return mappings


def exposed_ports(svc: dict[str, Any]) -> set[int]:
    exposed = {int(str(port).split("/", 1)[0]) for port in svc.get("expose") or []}
    return exposed | {container for _, container in port_mappings(svc)}


def interpolation(value: str) -> tuple[str, str, str] | None:
    """(name, operator, argument) of a whole-value `${...}`, or None for anything else."""
    match = INTERPOLATION.match(value.strip())
    if match is None:
        return None
    return match["name"], match["op"] or "", match["arg"] or ""


def host_and_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def console_scripts() -> dict[str, str]:
    with PYPROJECT.open("rb") as fh:
        project = tomllib.load(fh)
    return dict(project.get("project", {}).get("scripts", {}))


def settings_env_names() -> set[str]:
    """The environment variables core/settings.py reads through its `get(...)` helper."""
    return set(re.findall(r"\bget\(\s*\"([A-Z][A-Z0-9_]*)\"\s*\)", SETTINGS_PY.read_text()))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions: list[tuple[str, str]] = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


# --- the service graph -----------------------------------------------------------------


def test_compose_parses_and_defines_the_stack() -> None:
    assert EXPECTED_SERVICES <= set(services()), sorted(services())


@pytest.mark.parametrize("name", sorted(EXPECTED_SERVICES))
def test_service_has_image_or_build(name: str) -> None:
    svc = service(name)
    assert svc.get("image") or svc.get("build"), f"{name} has neither image nor build"


def test_build_services_point_at_a_dockerfile_in_the_repo() -> None:
    built = {name: svc["build"] for name, svc in services().items() if "build" in svc}
    assert {"api", "worker"} <= set(built)
    for name, build in built.items():
        context, dockerfile = (
            (build, "Dockerfile")
            if isinstance(build, str)
            else (build.get("context", "."), build.get("dockerfile", "Dockerfile"))
        )
        path = (COMPOSE_FILE.parent / context / dockerfile).resolve()
        assert path == DOCKERFILE, f"{name} builds from {path}, expected the repo Dockerfile"
        assert path.is_file(), f"{name} builds from {path}, which does not exist"


def test_depends_on_targets_are_defined_services() -> None:
    defined = set(services())
    for name, svc in services().items():
        for target in depends_on(svc):
            assert target in defined, f"{name} depends on undefined service {target!r}"
            assert target != name, f"{name} depends on itself"


def test_dependency_order() -> None:
    assert "postgresql" in depends_on(service("temporal"))
    assert service("temporal")["depends_on"]["postgresql"]["condition"] == "service_healthy"
    for name in ("temporal-ui", "api", "worker"):
        assert TEMPORAL_SERVICE in depends_on(service(name)), f"{name} must wait for temporal"


# --- ports -----------------------------------------------------------------------------


def test_published_ports_are_valid_and_unique() -> None:
    seen: dict[int, str] = {}
    for name, svc in services().items():
        for host, container in port_mappings(svc):
            assert 1 <= container <= 65535, f"{name}: bad container port {container}"
            if host is None:
                continue
            assert 1 <= host <= 65535, f"{name}: bad host port {host}"
            assert host not in seen, f"host port {host} used by both {seen[host]} and {name}"
            seen[host] = name
    assert {7233, 8000, 8080} <= set(seen)


def test_port_mapping_parser_handles_compose_forms() -> None:
    svc = {"ports": ["8000:8000", "127.0.0.1:8080:80/tcp", "9000", {"target": 1, "published": 2}]}
    assert port_mappings(svc) == [(8000, 8000), (8080, 80), (None, 9000), (2, 1)]


def test_api_publishes_the_port_it_listens_on() -> None:
    api = service("api")
    port = int(option_value(command_words(api), "--port"))
    assert port in {container for _, container in port_mappings(api)}
    healthcheck = " ".join(str(word) for word in api["healthcheck"]["test"])
    assert f"localhost:{port}/health" in healthcheck


def test_temporal_addresses_point_at_the_temporal_service() -> None:
    assert TEMPORAL_PORT in exposed_ports(service(TEMPORAL_SERVICE))
    for name in ("temporal-ui", "api", "worker"):
        address = environment(service(name)).get("TEMPORAL_ADDRESS", "")
        assert host_and_port(address) == (TEMPORAL_SERVICE, TEMPORAL_PORT), (name, address)


# --- shared settings -------------------------------------------------------------------


def test_api_and_worker_share_the_temporal_connection() -> None:
    api_env, worker_env = environment(service("api")), environment(service("worker"))
    for var in TEMPORAL_CONNECTION_VARS:
        assert api_env.get(var), f"api does not set {var}"
        assert api_env.get(var) == worker_env.get(var), (
            f"api and worker disagree on {var}: the worker would never see the API's runs"
        )


def test_temporal_connection_is_written_once_as_an_anchor() -> None:
    anchor = load_compose().get("x-temporal-env")
    assert isinstance(anchor, dict)
    assert set(anchor) == set(TEMPORAL_CONNECTION_VARS)
    for name in ("api", "worker"):
        env = environment(service(name))
        assert {var: env[var] for var in TEMPORAL_CONNECTION_VARS} == anchor


def test_temporal_database_settings_match_postgresql() -> None:
    db_env, temporal_env = environment(service("postgresql")), environment(service("temporal"))
    assert temporal_env["DB"] == "postgres12"
    assert temporal_env["POSTGRES_SEEDS"] == "postgresql"
    assert temporal_env["POSTGRES_SEEDS"] in services()
    assert temporal_env["POSTGRES_USER"] == db_env["POSTGRES_USER"]
    assert temporal_env["POSTGRES_PWD"] == db_env["POSTGRES_PASSWORD"]
    password = interpolation(db_env["POSTGRES_PASSWORD"])
    assert password and password[0] == "POSTGRES_PASSWORD", "password must be a variable"
    assert int(temporal_env.get("DB_PORT", "5432")) == 5432
    healthcheck = " ".join(service("postgresql")["healthcheck"]["test"])
    assert "pg_isready" in healthcheck


# --- secrets and settings ---------------------------------------------------------------


def test_api_requires_an_api_key() -> None:
    parts = interpolation(environment(service("api"))["LOOPLLAMA_API_KEY"])
    assert parts, "LOOPLLAMA_API_KEY must come from the environment"
    name, op, message = parts
    assert name == "LOOPLLAMA_API_KEY"
    assert op == ":?", "use ${LOOPLLAMA_API_KEY:?...}: compose then refuses to start without it"
    assert message, "say what to set"


def test_no_secret_has_a_literal_default() -> None:
    for name, svc in services().items():
        for var, value in environment(svc).items():
            if not SECRET_NAME.search(var):
                continue
            parts = interpolation(value)
            assert parts, f"{name}: secret {var} is a literal, not ${{...}} from the environment"
            _, op, default = parts
            if op in {"-", ":-"} and default:
                assert var in LOCAL_DB_PASSWORD_VARS, f"{name}: secret {var} has a default"


def test_secret_check_recognises_defaults() -> None:
    assert interpolation("${A:-}") == ("A", ":-", "")
    assert interpolation("${A:-x}") == ("A", ":-", "x")
    assert interpolation("${A:?set A}") == ("A", ":?", "set A")
    assert interpolation("${A}") == ("A", "", "")
    assert interpolation("literal") is None
    assert interpolation("x${A}") is None


def test_app_settings_reach_the_right_process() -> None:
    api_env, worker_env = environment(service("api")), environment(service("worker"))
    assert API_VARS <= set(api_env), sorted(API_VARS - set(api_env))
    assert WORKER_VARS <= set(worker_env), sorted(WORKER_VARS - set(worker_env))
    assert "ANTHROPIC_API_KEY" not in api_env, "the API does not call the model"


def test_every_setting_the_app_reads_is_wired_or_deliberately_defaulted() -> None:
    read = settings_env_names()
    assert API_VARS | WORKER_VARS <= read, "core/settings.py no longer reads an expected var"
    wired = set(environment(service("api"))) | set(environment(service("worker")))
    missing = read - wired - SETTINGS_NOT_IN_COMPOSE
    assert not missing, f"set these in docker-compose.yml (api or worker): {sorted(missing)}"


# --- commands and image ---------------------------------------------------------------


def test_commands_use_the_loopllama_console_script() -> None:
    scripts = console_scripts()
    assert "loopllama" in scripts, "pyproject.toml [project.scripts] must declare loopllama"
    assert command_words(service("api"))[:2] == ["loopllama", "api"]
    assert command_words(service("worker")) == ["loopllama", "worker"]
    module = scripts["loopllama"].split(":", 1)[0]
    top_package = module.split(".", 1)[0]
    assert (ROOT / top_package).is_dir() or (ROOT / f"{top_package}.py").is_file()


def test_dockerfile_runs_the_api_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert any(kw == "RUN" and "pip install --no-cache-dir ." in args for kw, args in instructions)
    users = [args for kw, args in instructions if kw == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the image must not run as root"
    assert keywords.index("USER") < keywords.index("CMD")
    cmd = next(args for kw, args in reversed(instructions) if kw == "CMD")
    words = yaml.safe_load(cmd)  # exec form is a JSON (hence YAML) list
    assert words == command_words(service("api"))
    assert ("EXPOSE", option_value(words, "--port")) in instructions


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".loopllama", ".env", ".pytest_cache"} <= patterns
    assert any("__pycache__" in pattern for pattern in patterns)
    assert not {"pyproject.toml", "core", "cli", "api"} & patterns, "needed by pip install ."


def test_api_and_worker_share_retention_and_the_blob_store() -> None:
    api, worker = service("api"), service("worker")
    for svc in (api, worker):
        env = environment(svc)
        assert env["LOOPLLAMA_RETENTION_DAYS"] == "30"
        assert f"blobs:{env['LOOPLLAMA_BLOB_DIR']}" in svc["volumes"]
    assert "blobs" in load_compose()["volumes"]
    # The auto-setup image's own namespace keeps runs as long as LoopLlama expects.
    assert environment(service("temporal"))["DEFAULT_NAMESPACE_RETENTION"] == "720h"


def test_two_api_and_two_worker_replicas() -> None:
    for name in ("api", "worker"):
        assert service(name)["deploy"]["replicas"] == 2, name
    assert "8000-8001:8000" in service("api")["ports"]


def test_bind_mounts_name_files_in_the_repository() -> None:
    """`./path:/container/path` mounts (Temporal's dynamic config) point at real files,
    and Temporal is told to read the one mounted for it."""
    mounted: dict[str, str] = {}
    for name, svc in services().items():
        for volume in svc.get("volumes") or []:
            source, _, target = str(volume).partition(":")
            if source.startswith("./"):
                assert (ROOT / source).is_file(), f"{name} mounts missing {source}"
                mounted[target.split(":")[0]] = source
    dynamic = environment(service("temporal"))["DYNAMIC_CONFIG_FILE_PATH"]
    config_file = mounted.get(f"/etc/temporal/{dynamic}")
    assert config_file is not None, f"{dynamic} is not mounted into the temporal service"
    config = yaml.safe_load((ROOT / config_file).read_text(encoding="utf-8"))
    assert config["system.enableActivityEagerExecution"] == [{"value": True}]
