"""The deployment files (docker/, deploy/helm/) agree with the code and with each other.

docker compose validates the compose file for real (Debian's docker-compose v1, installed by
.ci/run); Dagster's own config schemas validate the instance file; the rest is parsed here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml  # type: ignore[import-untyped]  # PyYAML has no inline types and types-PyYAML is not installed
from pydantic import SecretStr

from st_pipeline.settings import Settings, load_settings
from st_pipeline_tests.conftest import POSTGRES_ADMIN_URL

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
INSTANCE_FILE = DOCKER / "dagster.yaml"
HELM_VALUES = ROOT / "deploy" / "helm" / "values.yaml"
DOCKERFILES = (DOCKER / "Dockerfile.user-code", DOCKER / "Dockerfile.dagster")

# Variables of the compose deployment itself, not of st_pipeline (whose variables are Settings.variables()).
COMPOSE_ONLY = frozenset(
    {
        "POSTGRES_PASSWORD",
        "DAGSTER_PG_HOST",
        "DAGSTER_PG_PORT",
        "DAGSTER_PG_USER",
        "DAGSTER_PG_PASSWORD",
        "DAGSTER_PG_DB",
        "PROXY_BIND_ADDRESS",
        "PROXY_OPERATOR_USER",
        "PROXY_OPERATOR_PASSWORD_HASH",
        "PROXY_VIEWER_USER",
        "PROXY_VIEWER_PASSWORD_HASH",
        "OIDC_ISSUER_URL",
        "OIDC_REDIRECT_URL",
        "OIDC_EMAIL_DOMAIN",
        "OIDC_CLIENT_ID",
        "OIDC_CLIENT_SECRET",
        "OIDC_COOKIE_SECRET",
        "IMAGE_TAG",
    }
)
DAGSTER_PG = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")
COMPOSE_SECRETS = frozenset(
    {
        "POSTGRES_PASSWORD",
        "DAGSTER_PG_PASSWORD",
        "PROXY_OPERATOR_PASSWORD_HASH",
        "PROXY_VIEWER_PASSWORD_HASH",
        "OIDC_CLIENT_SECRET",
        "OIDC_COOKIE_SECRET",
    }
)
SERVICES = {"postgres", "user_code", "dagster_webserver", "dagster_webserver_readonly", "dagster_daemon", "proxy"}
PROXIES = {"proxy", "oauth2_proxy"}
DOCKER_SOCKET = "/var/run/docker.sock"


# -- helpers ---------------------------------------------------------------------------------------


def parse_env_file(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(variable → value, variable → the comment line just above it). Single quotes are literal."""
    values: dict[str, str] = {}
    comments: dict[str, str] = {}
    previous = ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            previous = ""
            continue
        if stripped.startswith("#"):
            previous = stripped
            continue
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", stripped)
        assert match, f"{path.name}:{number} is not VARIABLE=value"
        name, value = match.groups()
        assert name not in values, f"{path.name}: {name} is listed twice"
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
        comments[name] = previous
        previous = ""
    return values, comments


def settings_secrets() -> set[str]:
    return {
        field.alias
        for field in Settings.model_fields.values()
        if field.alias and SecretStr in getattr(field.annotation, "__args__", (field.annotation,))
    }


def dagster_pg_env(example: Mapping[str, str]) -> dict[str, str]:
    return {name: example[name] for name in DAGSTER_PG}


def init_sql_databases() -> list[str]:
    return re.findall(r"\bCREATE DATABASE (\w+)", (DOCKER / "postgres-init.sql").read_text())


def pip_install_violations(dockerfile: str, extras: set[str]) -> list[str]:
    """What a Dockerfile installs with pip other than the project from its own copied files.

    Allowed: `pip install DIR` or `pip install "DIR[extra]"`, DIR being where the Dockerfile copied
    pyproject.toml, extra one of pyproject's optional-dependencies; options only without an
    argument of their own (no -r, no index, no links).
    """
    text = re.sub(r"\\\n", " ", dockerfile)
    project_dirs = set()
    for line in text.splitlines():
        words = line.split()
        if words and words[0].upper() == "COPY" and "pyproject.toml" in words[1:-1]:
            project_dirs.add(words[-1].rstrip("/"))
    violations = []
    for line in text.splitlines():
        words = line.split(maxsplit=1)
        if not words or words[0].upper() != "RUN":
            continue
        for command in re.split(r"&&|\|\||;", words[1]):
            tokens = shlex.split(command)
            if "pip" not in [Path(token).name for token in tokens[:4]] or "install" not in tokens:
                continue
            for token in tokens[tokens.index("install") + 1 :]:
                if token.startswith("-"):
                    if token.split("=")[0] in {
                        "-r",
                        "--requirement",
                        "-c",
                        "--constraint",
                        "-i",
                        "--index-url",
                        "--extra-index-url",
                        "-f",
                        "--find-links",
                        "-e",
                        "--editable",
                    }:
                        violations.append(token)
                    continue
                match = re.fullmatch(r"(.+?)(?:\[([\w,-]+)\])?", token)
                assert match
                target, extra = match.groups()
                if target.rstrip("/") not in project_dirs or (extra and not set(extra.split(",")) <= extras):
                    violations.append(token)
    return violations


def caddy_sites(text: str) -> dict[str, list[list[Any]]]:
    """Site address → its directives, each [name, argument…, [sub-lines…]] (a small Caddyfile reader)."""
    tokens = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)
        tokens.extend(line.split() + ["\n"])

    def block(position: int) -> tuple[list[list[Any]], int]:
        lines: list[list[Any]] = []
        current: list[Any] = []
        while position < len(tokens):
            token = tokens[position]
            position += 1
            if token == "{":
                inner, position = block(position)
                current.append(inner)
            elif token == "}":
                if current:
                    lines.append(current)
                return lines, position
            elif token == "\n":
                if current:
                    lines.append(current)
                current = []
            else:
                current.append(token)
        if current:
            lines.append(current)
        return lines, position

    top, _ = block(0)
    sites = {}
    for entry in top:
        if not isinstance(entry[-1], list):
            raise AssertionError(f"top-level line outside a block: {entry}")
        if len(entry) == 1:  # global options
            continue
        for address in entry[:-1]:
            sites[address] = entry[-1]
    return sites


def compose_yaml() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def instance_yaml() -> dict[str, Any]:
    return yaml.safe_load(INSTANCE_FILE.read_text())


def root_run_queue() -> dict[str, Any]:
    """The run queue of the repository's dagster.yaml, in whichever form it is written."""
    root = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    if "runs" in root.get("concurrency", {}):
        return root["concurrency"]["runs"]
    return root["run_coordinator"]["config"]


# -- docker/.env.example ---------------------------------------------------------------------------


def test_env_example_lists_every_setting_and_no_stale_one() -> None:
    assert not {name for name in COMPOSE_ONLY if name.startswith(("ST_PIPELINE_", "SERVICETITAN_"))}
    example, comments = parse_env_file(ENV_EXAMPLE)
    settings = set(Settings.variables())
    missing = settings - set(example)
    stale = set(example) - settings - COMPOSE_ONLY
    assert not missing, f"docker/.env.example lacks {sorted(missing)} (st_pipeline/settings.py reads them)"
    assert not stale, f"docker/.env.example lists {sorted(stale)}, which nothing reads"
    assert COMPOSE_ONLY <= set(example), f"docker/.env.example lacks {sorted(COMPOSE_ONLY - set(example))}"
    uncommented = [name for name in example if not comments[name]]
    assert not uncommented, f"no one-line comment above {uncommented}"


def test_env_example_holds_placeholders_not_secrets_and_loads_as_settings() -> None:
    example, _ = parse_env_file(ENV_EXAMPLE)
    for name in settings_secrets() | COMPOSE_SECRETS:
        value = example[name]
        assert value == "" or re.search(r"replace|change-me", value), f"{name} in .env.example is not a placeholder"
    for url in ("ST_PIPELINE_WAREHOUSE_URL", "ST_PIPELINE_REGISTRY_URL"):
        password = sa.make_url(example[url]).password
        assert password is not None and "change-me" in password
    # What compose hands the code server, read as the code server reads it.
    settings = load_settings({name: example[name] for name in Settings.variables()})
    assert not settings.local_mode
    assert settings.ui_url == "http://localhost:8080"


def test_env_example_database_urls_use_the_login_and_databases_compose_creates() -> None:
    example, _ = parse_env_file(ENV_EXAMPLE)
    created = init_sql_databases()
    assert sorted(created) == ["dagster", "registry", "warehouse"]
    assert example["DAGSTER_PG_DB"] in created
    databases = set()
    for name in ("ST_PIPELINE_WAREHOUSE_URL", "ST_PIPELINE_REGISTRY_URL"):
        url = sa.make_url(example[name])
        assert url.get_backend_name() == "postgresql"
        assert (url.host, str(url.port), url.username, url.password) == (
            example["DAGSTER_PG_HOST"],
            example["DAGSTER_PG_PORT"],
            example["DAGSTER_PG_USER"],
            example["DAGSTER_PG_PASSWORD"],
        ), f"{name} must use the DAGSTER_PG_* login of docker/.env.example"
        assert url.database in created and url.database != example["DAGSTER_PG_DB"]
        databases.add(url.database)
    assert len(databases) == 2


# -- docker-compose.yml, through docker compose itself ---------------------------------------------


@pytest.fixture(scope="module")
def compose_config() -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed: .ci/run installs Debian's docker-compose")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    example, _ = parse_env_file(ENV_EXAMPLE)
    # A variable of the calling shell would win over the env file: compose sees the example's values only.
    environ = {name: value for name, value in os.environ.items() if name not in example}
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE.relative_to(ROOT)), "--env-file", str(ENV_EXAMPLE.relative_to(ROOT)), "config"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


def _mounts(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        mounts.append((source, target))
    return mounts


def _command(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def test_compose_config_has_the_services_and_only_the_proxy_publishes(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert SERVICES <= set(services), f"missing services: {sorted(SERVICES - set(services))}"
    publishing = {name for name, service in services.items() if service.get("ports")}
    assert publishing and publishing <= PROXIES, f"only the proxy may publish ports, not {sorted(publishing - PROXIES)}"
    assert "proxy" in publishing
    for name, service in services.items():
        assert not service.get("network_mode"), f"{name} must stay on the compose network"


def test_compose_docker_socket_only_where_runs_are_started_or_stopped(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    with_socket = {
        name
        for name, service in services.items()
        if any(DOCKER_SOCKET in (source, target) for source, target in _mounts(service))
    }
    assert "dagster_daemon" in with_socket
    assert with_socket <= {"dagster_daemon", "dagster_webserver"}, f"{sorted(with_socket)} mount the Docker socket"


def test_compose_commands_env_and_run_containers(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    settings = set(Settings.variables())
    assert _command(services["user_code"]) == [
        "dagster",
        "api",
        "grpc",
        "-m",
        "st_pipeline.definitions",
        "-h",
        "0.0.0.0",
        "-p",
        "4000",
    ]
    operator, viewer = _command(services["dagster_webserver"]), _command(services["dagster_webserver_readonly"])
    assert operator[:2] == ["dagster-webserver", "-h"] and "--read-only" not in operator
    assert viewer[:2] == ["dagster-webserver", "-h"] and "--read-only" in viewer
    for command in (operator, viewer, _command(services["dagster_daemon"])):
        assert command[command.index("-w") + 1] == "workspace.yaml"

    # The code server and the daemon (which copies it into each run's container) get all of
    # st_pipeline's configuration; the webservers none of it.
    for name in ("user_code", "dagster_daemon"):
        environment = services[name]["environment"]
        assert settings | set(DAGSTER_PG) <= set(environment), f"{name} lacks {sorted(settings - set(environment))}"
    for name in ("dagster_webserver", "dagster_webserver_readonly"):
        environment = services[name]["environment"]
        assert set(DAGSTER_PG) <= set(environment)
        assert not (settings - {"DAGSTER_HOME"}) & set(environment), f"{name} must not get st_pipeline's secrets"
    daemon_env = services["dagster_daemon"]["environment"]
    instance = instance_yaml()["run_launcher"]["config"]
    unset = [name for name in instance["env_vars"] if "=" not in name and daemon_env.get(name) is None]
    assert not unset, f"the daemon cannot pass {unset} to runs: compose does not set them"

    # Runs start from the code server's own image, on the network and with the volume compose makes.
    assert services["user_code"]["environment"]["DAGSTER_CURRENT_IMAGE"] == services["user_code"]["image"]
    assert compose_config["networks"]["st_pipeline"]["name"] == instance["network"]
    for name in ("user_code", "dagster_daemon", "dagster_webserver", "dagster_webserver_readonly"):
        assert list(services[name]["networks"]) == ["st_pipeline"]
    run_volume, run_target = instance["container_kwargs"]["volumes"][0].split(":")[:2]
    assert compose_config["volumes"]["dagster_storage"]["name"] == run_volume
    for name in ("dagster_webserver", "dagster_webserver_readonly"):
        assert ("dagster_storage", run_target) in _mounts(services[name]) or (run_volume, run_target) in _mounts(
            services[name]
        )


def test_compose_postgres_creates_the_databases_with_a_health_check() -> None:
    postgres = compose_yaml()["services"]["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert postgres["healthcheck"]["test"][1] == "pg_isready"
    assert any(mount.startswith("./postgres-init.sql:/docker-entrypoint-initdb.d/") for mount in postgres["volumes"])
    assert any(mount.split(":")[0] == "postgres_data" for mount in postgres["volumes"])
    assert {"DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "POSTGRES_PASSWORD"} <= set(postgres["environment"])


@pytest.fixture()
def admin_engine() -> Iterator[sa.Engine]:
    engine = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def test_postgres_init_script_runs_and_keeps_the_registry_private(admin_engine: sa.Engine) -> None:
    """The script as the postgres image runs it (psql, ON_ERROR_STOP), under unique names."""
    psql = shutil.which("psql")
    if psql is None:
        if os.environ.get("CI"):
            pytest.fail("psql is not installed")
        pytest.skip("psql is not installed")
    prefix = f"st_pipeline_test_{uuid.uuid4().hex[:8]}_"
    script = re.sub(
        r"\bDATABASE (dagster|warehouse|registry)\b",
        rf"DATABASE {prefix}\1",
        (DOCKER / "postgres-init.sql").read_text(),
    )
    login, outsider = f"{prefix}login", f"{prefix}outsider"
    admin_url = sa.make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        result = subprocess.run(
            [psql, "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-q", admin_url],
            input=script,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "DAGSTER_PG_USER": login, "DAGSTER_PG_PASSWORD": "it's a secret"},
        )
        assert result.returncode == 0, result.stderr
        with admin_engine.connect() as conn:
            conn.execute(sa.text(f'CREATE ROLE "{outsider}" LOGIN'))
            owners = dict(
                conn.execute(
                    sa.text("SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname LIKE :p"),
                    {"p": prefix + "%"},
                )
                .tuples()
                .all()
            )
            assert owners == {f"{prefix}{name}": login for name in ("dagster", "warehouse", "registry")}
            assert (
                conn.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = :r"), {"r": login}).scalar()
                is False
            )
            connect = {
                name: conn.execute(
                    sa.text("SELECT has_database_privilege(:r, :d, 'CONNECT')"), {"r": outsider, "d": prefix + name}
                ).scalar()
                for name in ("dagster", "warehouse", "registry")
            }
            assert connect == {"dagster": False, "warehouse": True, "registry": False}
    finally:
        with admin_engine.connect() as conn:
            for name in ("dagster", "warehouse", "registry"):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{prefix}{name}" WITH (FORCE)'))
            for role in (login, outsider):
                conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))


# -- Dockerfiles -----------------------------------------------------------------------------------


def test_pip_install_checker_bites() -> None:
    base = "FROM python:3.11-slim\nCOPY pyproject.toml README.md /tmp/src/\n"
    assert pip_install_violations(base + "RUN pip install /tmp/src && rm -rf /tmp/src\n", {"docker"}) == []
    assert pip_install_violations(base + 'RUN pip install "/tmp/src[docker]"\n', {"docker"}) == []
    assert pip_install_violations(base + "RUN pip install /tmp/src requests\n", {"docker"}) == ["requests"]
    assert pip_install_violations(
        base + "RUN pip install /tmp/src \\\n    && pip install dagster-aws\n", {"docker"}
    ) == ["dagster-aws"]
    assert pip_install_violations(base + "RUN pip install -r requirements.txt\n", {"docker"}) == [
        "-r",
        "requirements.txt",
    ]
    assert pip_install_violations(base + 'RUN python -m pip install "/tmp/src[aws]"\n', {"docker"}) == ["/tmp/src[aws]"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_installs_only_the_project_from_its_own_files(dockerfile: Path) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    text = dockerfile.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert re.search(r"^RUN .*pip install", text, re.M), "the image must install the project"
    assert pip_install_violations(text, set(pyproject["project"]["optional-dependencies"])) == []
    assert re.search(r"^ENV .*DAGSTER_HOME=/opt/dagster/dagster_home", text, re.M | re.S)
    # Every file it copies exists and is let through by its .dockerignore.
    ignore = (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["COPY"]:
            for source in words[1:-1]:
                assert (ROOT / source).exists(), f"{dockerfile.name} copies {source}, which does not exist"
                assert source in allowed, f"{dockerfile.name} copies {source}, which its .dockerignore excludes"


def test_dockerfiles_serve_the_code_location_and_carry_the_instance() -> None:
    user_code, dagster = (path.read_text() for path in DOCKERFILES)
    assert 'CMD ["dagster", "api", "grpc", "-m", "st_pipeline.definitions", "-h", "0.0.0.0", "-p", "4000"]' in user_code
    assert re.search(r'^RUN pip install "[^"]+\[docker\]"', dagster, re.M)
    assert re.search(r"^COPY docker/dagster\.yaml docker/workspace\.yaml \"\$DAGSTER_HOME/\"$", dagster, re.M)
    assert re.search(r"^COPY docker/dagster\.yaml \"\$DAGSTER_HOME/dagster\.yaml\"$", user_code, re.M)
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    assert workspace == {
        "load_from": [{"grpc_server": {"host": "user_code", "port": 4000, "location_name": "st_pipeline"}}]
    }


def test_docker_extra_pins_the_dagster_family() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for dep in project["dependencies"]:
        if "==" in dep:
            pin = re.fullmatch(r"([\w-]+)==([\w.]+)", dep)
            assert pin is not None, dep
            pins[pin[1]] = pin[2]
    docker_extra = project["optional-dependencies"]["docker"]
    assert docker_extra == [f"dagster-docker=={pins['dagster-postgres']}"]
    assert pins["dagster"] == pins["dagster-webserver"]


# -- the proxy -------------------------------------------------------------------------------------


def test_caddyfile_requires_a_login_on_both_sites_and_proxies_to_the_right_webserver() -> None:
    sites = caddy_sites((DOCKER / "Caddyfile").read_text())
    expected = {":8080": ("dagster_webserver:3000", "OPERATOR"), ":8081": ("dagster_webserver_readonly:3000", "VIEWER")}
    assert set(sites) == set(expected)
    compose = compose_yaml()["services"]
    proxy_env = set(compose["proxy"]["environment"])
    published = {port.rsplit(":", 1)[-1] for port in compose["proxy"]["ports"]}
    for address, (upstream, who) in expected.items():
        directives = {line[0]: line[1:] for line in sites[address]}
        # Nothing but the login and the proxy: no route, handle or matcher that could skip the login.
        assert set(directives) == {"basicauth", "reverse_proxy"}, f"{address}: {sorted(directives)}"
        accounts = directives["basicauth"][-1]
        assert accounts == [[f"{{$PROXY_{who}_USER}}", f"{{$PROXY_{who}_PASSWORD_HASH}}"]]
        assert len(directives["basicauth"]) == 1, "basicauth must cover every request (no matcher)"
        assert directives["reverse_proxy"] == [upstream]
        assert {f"PROXY_{who}_USER", f"PROXY_{who}_PASSWORD_HASH"} <= proxy_env
        assert address.lstrip(":") in published
        host, port = upstream.split(":")
        webserver = compose[host]["command"]
        assert webserver[webserver.index("-p") + 1] == port


def test_caddyfile_passes_caddys_own_validation(tmp_path: Path) -> None:
    """Caddy itself (Debian's package, installed by .ci/run) adapts and validates the Caddyfile."""
    binary = shutil.which("caddy")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("caddy is not installed: .ci/run installs Debian's caddy")
        pytest.skip("caddy is not installed (apt-get install caddy)")
    hashed = subprocess.run(
        [binary, "hash-password", "--plaintext", "not-a-real-password"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    env = {
        **os.environ,
        "PROXY_OPERATOR_USER": "operator",
        "PROXY_VIEWER_USER": "viewer",
        "PROXY_OPERATOR_PASSWORD_HASH": hashed,
        "PROXY_VIEWER_PASSWORD_HASH": hashed,
    }
    result = subprocess.run(
        [binary, "adapt", "--config", str(DOCKER / "Caddyfile"), "--validate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    adapted = json.loads(result.stdout)
    routes = json.dumps(adapted["apps"]["http"]["servers"])
    assert routes.count('"authentication"') == 2 and "dagster_webserver_readonly:3000" in routes


# -- docker/dagster.yaml ---------------------------------------------------------------------------


def test_instance_file_matches_the_root_instance() -> None:
    """(Dagster's schema accepts it: ``test_instance_file_runs_one_run_per_tenant_and_retries_only_crashes``.)"""
    config = instance_yaml()
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    runs = config["concurrency"]["runs"]
    assert runs["tag_concurrency_limits"] == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]
    root_queue = root_run_queue()
    assert {key: runs[key] for key in ("max_concurrent_runs", "tag_concurrency_limits")} == {
        key: root_queue[key] for key in ("max_concurrent_runs", "tag_concurrency_limits")
    }
    assert config["run_retries"] == {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": False}
    assert {"schedule", "sensor"} <= set(config["retention"])
    assert config["telemetry"] == {"enabled": False}
    # The two production instances differ in the run launcher only.
    root = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    for key in ("storage", "run_monitoring", "run_retries", "retention", "telemetry"):
        if key in root:
            assert config[key] == root[key], f"{key} differs from the repository's dagster.yaml"
    assert "run_coordinator" not in config and "run_queue" not in config


def test_instance_file_passes_every_variable_a_run_needs() -> None:
    env_vars = instance_yaml()["run_launcher"]["config"]["env_vars"]
    assert len(env_vars) == len(set(env_vars))
    # DAGSTER_HOME is the image's; everything else a run worker reads comes from the daemon.
    assert set(env_vars) == set(Settings.variables()) - {"DAGSTER_HOME"} | set(DAGSTER_PG)


def load_instance(config: dict[str, Any], home: Path, monkeypatch: pytest.MonkeyPatch) -> dg.DagsterInstance:
    """The instance Dagster builds from ``config`` as a ``DAGSTER_HOME``'s dagster.yaml (SQLite storage
    in ``home`` instead of what it says): Dagster validates every block, the run launcher's too."""
    config = {**config, "storage": {"sqlite": {"base_dir": str(home)}}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return dg.DagsterInstance.get()


def test_instance_file_runs_one_run_per_tenant_and_retries_only_crashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instance as Dagster builds it (SQLite storage instead of PostgreSQL, the rest as written)."""
    from dagster_docker import DockerRunLauncher

    with load_instance(instance_yaml(), tmp_path, monkeypatch) as instance:
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 8
        assert queue.tag_concurrency_limits == [
            {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ]
        assert isinstance(instance.run_launcher, DockerRunLauncher)
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.run_monitoring_enabled


# -- deploy/helm/values.yaml -----------------------------------------------------------------------


def test_helm_values_run_the_user_code_image_with_the_k8s_run_launcher() -> None:
    values = yaml.safe_load(HELM_VALUES.read_text())
    deployments = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"] is True and len(deployments) == 1
    code = deployments[0]
    assert code["image"]["repository"].endswith("/st-pipeline-user-code")
    assert code["image"]["tag"] not in ("", "latest")
    assert code["dagsterApiGrpcArgs"] == ["-m", "st_pipeline.definitions"]
    assert code["envSecrets"] == [{"name": "st-pipeline-env"}]
    assert code["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert set(code["env"]) == set(DAGSTER_PG) - {"DAGSTER_PG_PASSWORD"}
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert values["dagsterWebserver"]["enableReadOnly"] is True


def test_helm_values_carry_the_same_instance_settings_as_compose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = yaml.safe_load(HELM_VALUES.read_text())
    compose_instance = instance_yaml()
    queue = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert queue["maxConcurrentRuns"] == compose_instance["concurrency"]["runs"]["max_concurrent_runs"]
    assert queue["tagConcurrencyLimits"] == compose_instance["concurrency"]["runs"]["tag_concurrency_limits"]
    extra = values["additionalInstanceConfig"]
    assert extra == {key: compose_instance[key] for key in ("run_monitoring", "run_retries")}
    # The chart's own blocks stay off, so that dagster.yaml gets each block once.
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"] is False
    assert values["dagsterDaemon"]["runRetries"]["enabled"] is False
    assert values["retention"]["enabled"] is True and values["telemetry"]["enabled"] is False
    assert {kind: values["retention"][kind]["purgeAfterDays"] for kind in ("schedule", "sensor")} == {
        kind: compose_instance["retention"][kind]["purge_after_days"] for kind in ("schedule", "sensor")
    }
    with load_instance(extra, tmp_path, monkeypatch) as instance:  # Dagster's instance schema accepts the blocks
        assert instance.run_retries_enabled and instance.run_monitoring_enabled


def test_helm_values_hold_no_secret() -> None:
    def keys(node: Any) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield str(key), value
                yield from keys(value)
        elif isinstance(node, list):
            for item in node:
                yield from keys(item)

    values = yaml.safe_load(HELM_VALUES.read_text())
    for key, value in keys(values):
        if re.search(r"password|secret|token", key, re.I) and not key.endswith(("SecretName", "Secrets")):
            assert isinstance(value, (bool, dict, list)) or value in (None, ""), f"{key} holds a value"
