"""Options from kongflow.toml / [tool.kongflow] and KONGFLOW_* variables, under the command
line; a bad file is a clear error that names the file and the key."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kongflow import Client
from kongflow.cli import app


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KONGFLOW_CONFIG", raising=False)
    return tmp_path


def kongflow(*args: str, **env: str) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def shown(output: str) -> dict[str, tuple[str, str]]:
    """`kongflow config` rows: option -> (value, source)."""
    rows = {}
    for line in output.splitlines()[1:]:
        option, *middle, source = line.split()
        if source == "line":  # "command line"
            source = "command line"
            middle = middle[:-1]
        rows[option] = (" ".join(middle), source)
    return rows


def test_the_file_then_the_environment_then_the_command_line(
    here: Path, database_url: str, schema: str
) -> None:
    (here / "pyproject.toml").write_text(
        '[project]\nname = "app"\n\n'
        f'[tool.kongflow]\nschema = "{schema}"\n\n'
        '[tool.kongflow.worker]\nconcurrency = 20\npoll-only = true\nqueue = ["mail", "runs:*"]\n'
        'lease = 9\n\n[tool.kongflow.jobs.list]\nstate = "failed"\n'
    )
    out = kongflow("config", "worker", KONGFLOW_WORKER_LEASE="12")
    assert out.exit_code == 0, out.output
    rows = shown(out.output)
    assert rows["--concurrency"] == ("20", "file")
    assert rows["--poll-only"] == ("True", "file")
    assert rows["--queue"] == ("['mail', 'runs:*']", "file")
    assert rows["--lease"] == ("12.0", "environment")
    assert rows["--schema"] == (schema, "file")
    assert rows["--poll-interval"] == ("1.0", "default")

    async def jobs() -> None:
        async with Client(database_url, schema=schema) as client:
            await client.add_job("a-available")
            failed = await client.add_job("a-failed")
            await client.permanently_fail_jobs([failed.id])

    asyncio.run(jobs())
    env = {"DATABASE_URL": database_url}
    from_file = kongflow("jobs", "list", **env)
    assert from_file.exit_code == 0, from_file.output
    assert "a-failed" in from_file.output and "a-available" not in from_file.output
    from_env = kongflow("jobs", "list", **env, KONGFLOW_JOBS_LIST_STATE="available")
    assert "a-available" in from_env.output and "a-failed" not in from_env.output
    from_flag = kongflow("jobs", "list", "--state", "failed", **env, KONGFLOW_JOBS_LIST_STATE="x")
    assert "a-failed" in from_flag.output and "a-available" not in from_flag.output


def test_kongflow_toml_comes_before_pyproject_and_kongflow_config_names_another(
    here: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    (here / "pyproject.toml").write_text("[tool.kongflow.worker]\nconcurrency = 5\n")
    (here / "kongflow.toml").write_text("[worker]\nconcurrency = 6\n")
    assert shown(kongflow("config", "worker").output)["--concurrency"] == ("6", "file")
    other = tmp_path_factory.mktemp("elsewhere") / "prod.toml"
    other.write_text("[worker]\nconcurrency = 7\n")
    named = kongflow("config", "worker", KONGFLOW_CONFIG=str(other))
    assert shown(named.output)["--concurrency"] == ("7", "file")
    missing = kongflow("config", "worker", KONGFLOW_CONFIG=str(here / "nope.toml"))
    assert missing.exit_code == 1 and "KONGFLOW_CONFIG names" in missing.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[worker]\nconcurency = 5\n", "[worker] has no option 'concurency' (it takes: "),
        (
            "[worker]\nconcurrency = 0\n",
            "[worker] concurrency: Input should be greater than or equal to 1",
        ),
        (
            "[worker]\nconcurrency = 'many'\n",
            "[worker] concurrency: Input should be a valid integer",
        ),
        ("[wroker]\nconcurrency = 5\n", "has no 'wroker' (it takes: "),
        ("worker = 5\n", "[worker] must be a table"),
        ("[worker\n", "is not valid TOML"),
        (
            "[jobs.list]\nstate = 1\nlimit = -1\n",
            "[jobs.list] limit: Input should be greater than or equal to 1",
        ),
    ],
)
def test_a_bad_file_names_the_file_and_the_key(here: Path, text: str, message: str) -> None:
    (here / "kongflow.toml").write_text(text)
    out = kongflow("config", "worker")
    assert out.exit_code == 1
    assert "kongflow.toml" in out.output and message in " ".join(out.output.split()), out.output


def test_secrets_are_not_shown(here: Path) -> None:
    (here / "kongflow.toml").write_text("[serve]\ndashboard-token = 'a-very-secret-token-1234'\n")
    out = kongflow("config", "serve", DATABASE_URL="postgresql://app:hunter2@127.0.0.1:1/app")
    assert out.exit_code == 0, out.output
    assert "a-very-secret-token" not in out.output and "hunter2" not in out.output
    assert shown(out.output)["--dashboard-token"] == ("***", "file")
    assert shown(out.output)["--database-url"] == (
        "postgresql://app:***@127.0.0.1:1/app",
        "environment",
    )
