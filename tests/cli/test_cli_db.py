"""`kongflow db ...` against a real embedded PostgreSQL in a private data directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg


def _kongflow(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["KONGFLOW_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "kongflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_db_lifecycle(tmp_path: Path) -> None:
    home = tmp_path / "home"
    try:
        status = _kongflow(home, "db", "status")
        assert status.returncode == 0 and "not running" in status.stdout

        url = _kongflow(home, "db", "url")
        assert url.returncode == 0, url.stderr
        url_text = url.stdout.strip()
        assert (home / "pgdata" / "PG_VERSION").exists()

        # still running after the command exited: another process can use it
        with psycopg.connect(url_text) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        assert _kongflow(home, "db", "url").stdout.strip() == url_text  # reused

        status = _kongflow(home, "db", "status")
        assert "running (pid" in status.stdout and url_text in status.stdout

        migrated = _kongflow(home, "migrate")
        assert migrated.returncode == 0
        assert "applied" in migrated.stdout

        assert _kongflow(home, "db", "stop").stdout.strip() == "stopped"
        assert "not running" in _kongflow(home, "db", "status").stdout
        assert _kongflow(home, "db", "stop").stdout.strip() == "not running"

        # data kept across restarts
        started = _kongflow(home, "db", "start")
        assert started.returncode == 0, started.stderr
        assert "up to date" in _kongflow(home, "migrate").stdout
    finally:
        _kongflow(home, "db", "stop")


def test_migrate_reports_an_unreachable_database(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    done = subprocess.run(
        [sys.executable, "-m", "kongflow", "migrate"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "cannot reach PostgreSQL" in done.stderr
    assert "Traceback" not in done.stderr
