"""Every way a command can be given bad input: one line on stderr saying what to do, a non-zero exit,
no traceback, no secret, and the stored state byte for byte as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from pydantic import SecretStr

from st_pipeline.cli import main
from st_pipeline.tenants.crypto import generate_key
from st_pipeline_tests.conftest import CANARY_SECRET
from st_pipeline_tests.support import TEST_CHANGE, open_registry

TENANT = 4101


@pytest.fixture()
def home(local_env: Path) -> Path:
    """A home whose registry holds tenant 4101 (secret: the canary), encrypted under the environment's key."""
    registry = open_registry()
    registry.add(TENANT, "Acme Heating", "cid.acme", SecretStr(CANARY_SECRET), change=TEST_CHANGE)
    registry.close()
    return local_env


def _state(home: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(home.iterdir()) if path.is_file()}


def _run(args: list[str], env: dict[str, str] | None = None, stdin: str = "cs1.some-secret\n") -> Result:
    return CliRunner().invoke(main, args, env=env, input=stdin, prog_name="st-pipeline")


def _assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert CANARY_SECRET not in result.stdout + result.stderr
    assert "gAAAAA" not in result.stdout + result.stderr  # no Fernet token (an encrypted secret) either


ADD = ["tenant", "add", "--name", "Beta Plumbing", "--client-id", "cid.beta"]


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (
            ["tenant", "add", "--tenant", "0", "--name", "x", "--client-id", "cid.x"],
            2,
            ["Invalid value for '--tenant'", "between 1 and 9223372036854775807"],
        ),
        (["tenant", "add", "--tenant", "-7", "--name", "x", "--client-id", "cid.x"], 2, ["positive whole number"]),
        (["tenant", "add", "--tenant", str(2**70), "--name", "x", "--client-id", "cid.x"], 2, ["between 1 and"]),
        (["tenant", "add", "--tenant", "12abc", "--name", "x", "--client-id", "cid.x"], 2, ["positive whole number"]),
        (["tenant", "add", "--tenant", "5", "--name", "", "--client-id", "cid.x"], 1, ["must not be empty"]),
        (["tenant", "add", "--tenant", "5", "--name", "Bad\nName", "--client-id", "cid.x"], 1, ["printable"]),
        (["tenant", "add", "--tenant", "5", "--name", "gnp\u202eexe.pdf", "--client-id", "cid.x"], 1, ["printable"]),
        (["tenant", "add", "--tenant", "5", "--name", "N" * 201, "--client-id", "cid.x"], 1, ["at most 200"]),
        (["tenant", "add", "--tenant", "5", "--name", "Fine", "--client-id", "cid x"], 1, ["client id"]),
        (
            ["tenant", "add", "--tenant", str(TENANT), "--name", "Again", "--client-id", "cid.again"],
            1,
            ["tenant 4101 is already registered (Acme Heating)", "update-credentials --tenant 4101"],
        ),
        ([*ADD, "--tenant", "5", "--client-secret-env", "NOT_SET_ANYWHERE"], 2, ["NOT_SET_ANYWHERE is not set"]),
        (["tenant", "show", "--tenant", "999"], 1, ["tenant 999 is not registered"]),
        (["tenant", "disable", "--tenant", "999"], 1, ["tenant 999 is not registered"]),
        (["tenant", "remove", "--tenant", "999"], 1, ["tenant 999 is not registered"]),
        (["tenant", "update-credentials", "--tenant", "999"], 1, ["tenant 999 is not registered"]),
        (["tenant", "remove", "--tenant", str(TENANT), "--purge-data"], 2, ["cannot be undone", "--yes"]),
        (["tenant", "show"], 2, ["Missing option '--tenant'"]),
        (["endpoints", "disable", "crm/leads", "--tenant", "0"], 2, ["between 1 and"]),
        (["endpoints", "disable", "payrol"], 1, ["neither a module nor a dataset"]),
        (["access", "grant", "--tenant", str(TENANT), "--role", "bi"], 1, ["needs a PostgreSQL warehouse"]),
    ],
)
def test_bad_arguments(home: Path, args: list[str], code: int, fragments: list[str]) -> None:
    before = _state(home)
    _assert_one_line_error(_run(args), code, *fragments)
    assert _state(home) == before


@pytest.mark.parametrize("old", [["--tenant-id", "999"], ["--tenant-id=999"]])
def test_the_old_name_of_the_tenant_option_still_works_with_a_warning(home: Path, old: list[str]) -> None:
    result = _run(["tenant", "show", *old])
    assert result.exit_code == 1, result.stderr
    warning, error = result.stderr.splitlines()
    assert warning == "warning: --tenant-id is deprecated and goes in 0.3; use --tenant"
    assert error.startswith("error: tenant 999 is not registered")


@pytest.mark.parametrize(
    ("environ", "args", "fragments"),
    [
        (
            {"ST_PIPELINE_REGISTRY_URL": "definitely not a url"},
            ["tenant", "list"],
            ["ST_PIPELINE_REGISTRY_URL is not a database URL"],
        ),
        (
            {
                "ST_PIPELINE_REGISTRY_URL": "postgresql://st:pw-CANARY-db@127.0.0.1:1/registry",
                "ST_PIPELINE_WAREHOUSE_URL": "postgresql://st@127.0.0.1:1/warehouse",
            },
            ["tenant", "list"],
            ["cannot open ST_PIPELINE_REGISTRY_URL", "127.0.0.1:1"],
        ),
        (
            {"ST_PIPELINE_WAREHOUSE_URL": "postgresql://st@127.0.0.1:1/warehouse"},
            ["tenant", "list"],
            ["ST_PIPELINE_REGISTRY_URL is not set but ST_PIPELINE_WAREHOUSE_URL is", "local mode"],
        ),
        (
            {"ST_PIPELINE_REGISTRY_URL": "postgresql://st@127.0.0.1:1/registry"},
            ["db", "upgrade"],
            ["ST_PIPELINE_WAREHOUSE_URL is not set but ST_PIPELINE_REGISTRY_URL is"],
        ),
        (
            {"ST_PIPELINE_WAREHOUSE_URL": "oracle://x@h/db"},
            ["db", "upgrade"],
            ["ST_PIPELINE_WAREHOUSE_URL", "supported"],
        ),
        (
            {"SERVICETITAN_AUTH_URL": "http://collector.example/connect/token"},
            ADD + ["--tenant", "5"],
            ["SERVICETITAN_AUTH_URL", "SERVICETITAN_ENVIRONMENT=custom"],
        ),
        (
            {
                "SERVICETITAN_ENVIRONMENT": "custom",
                "SERVICETITAN_API_URL": "https://api.example",
                "SERVICETITAN_AUTH_URL": "http://collector.example/connect/token",
            },
            ADD + ["--tenant", "5"],
            ["SERVICETITAN_AUTH_URL uses plain http://", "in clear"],
        ),
        (
            {"ST_PIPELINE_SECRET_KEYS": generate_key()},
            ["keys", "rotate"],
            ["tenant 4101's stored client secret cannot be decrypted", "ST_PIPELINE_SECRET_KEYS"],
        ),
        (
            {"ST_PIPELINE_SECRET_KEYS": generate_key()},
            ["tenant", "test", "--tenant", str(TENANT)],
            ["tenant 4101", "ST_PIPELINE_SECRET_KEYS"],
        ),
        ({"ST_PIPELINE_SECRET_KEYS": "not-a-key"}, ADD + ["--tenant", "5"], ["invalid key (#1): not a Fernet key"]),
        ({"ST_PIPELINE_SECRET_KEYS": ""}, ADD + ["--tenant", "5"], ["no encryption key", "ST_PIPELINE_SECRET_KEYS"]),
        ({"ST_PIPELINE_SYNC_CRON": "x"}, ["tenant", "list"], []),  # read only by the code location: no error here
    ],
)
def test_bad_configuration(home: Path, environ: dict[str, str], args: list[str], fragments: list[str]) -> None:
    before = _state(home)
    result = _run(args, env=environ)
    if not fragments:
        assert result.exit_code == 0, result.stderr
    else:
        _assert_one_line_error(result, 1, *fragments)
        assert "pw-CANARY-db" not in result.stderr
    assert _state(home) == before


@pytest.mark.parametrize(
    ("content", "mode", "fragment"),
    [
        (b"KEY\n", 0o644, "chmod 600"),
        (b"\xff\xfeKEY", 0o600, "is not UTF-8 text"),
        (None, None, "cannot read"),
    ],
)
def test_bad_key_file(home: Path, content: bytes | None, mode: int | None, fragment: str) -> None:
    key_file = home.parent / "keys"
    if content is not None:
        key_file.write_bytes(content.replace(b"KEY", os.environ["ST_PIPELINE_SECRET_KEYS"].encode()))
        key_file.chmod(mode or 0o600)
    before = _state(home)
    environ = {"ST_PIPELINE_SECRET_KEYS": "", "ST_PIPELINE_SECRET_KEYS_FILE": str(key_file)}
    for args in (["keys", "rotate"], ADD + ["--tenant", "5"]):
        _assert_one_line_error(_run(args, env=environ), 1, "ST_PIPELINE_SECRET_KEYS_FILE", fragment)
    assert _state(home) == before


def test_a_name_too_long_for_postgresql_is_refused_before_the_database(home: Path, postgres_url: str) -> None:
    environ = {"ST_PIPELINE_REGISTRY_URL": postgres_url, "ST_PIPELINE_WAREHOUSE_URL": f"sqlite:///{home / 'w.db'}"}
    result = _run(["tenant", "add", "--tenant", "5", "--name", "N" * 201, "--client-id", "cid.x"], env=environ)
    _assert_one_line_error(result, 1, "at most 200 characters")
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        rows = conn.execute(sa.text("SELECT count(*) FROM st_tenants")).scalar_one() if "st_tenants" in tables else 0
    engine.dispose()
    assert rows == 0


def test_a_broken_registry_file_is_one_redacted_line_and_a_traceback_on_request(home: Path) -> None:
    broken = home.parent / "broken.db"
    broken.write_bytes(b"this is not a database, password=hunter2-CANARY " * 100)
    environ = {
        "ST_PIPELINE_REGISTRY_URL": f"sqlite:///{broken}",
        "ST_PIPELINE_WAREHOUSE_URL": f"sqlite:///{home / 'w.db'}",
    }
    result = _run(["tenant", "list"], env=environ)
    _assert_one_line_error(result, 1, "cannot open ST_PIPELINE_REGISTRY_URL")
    assert "hunter2" not in result.stderr
    assert _run(["--traceback", "tenant", "list"], env=environ).exit_code == 1
