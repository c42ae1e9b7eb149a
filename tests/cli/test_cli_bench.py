"""`kongflow bench`, every shape at toy sizes: it runs, reports sane figures and writes JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kongflow.cli import app


@pytest.mark.slow
def test_bench_runs_every_shape_and_writes_json(database_url: str, tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "--database-url",
            database_url,
            "--single",
            "40",
            "--clients",
            "2",
            "--bulk",
            "300",
            "--chunk",
            "100",
            "--jobs",
            "300",
            "--processes",
            "1",
            "--rate",
            "40",
            "--seconds",
            "1",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())["figures"]
    assert [f["shape"] for f in figures] == [
        "enqueue",  # floor: a bare INSERT
        "enqueue",  # add_job, 1 client
        "enqueue",  # pipelined
        "enqueue",  # several clients
        "enqueue",  # bulk
        "burn-down",
        "steady",
        "idle worker",
    ]
    assert all(f["value"] > 0 for f in figures)
    assert figures[0]["setting"].startswith("floor")
    steady = figures[6]["detail"]
    assert 0 < steady["p50"] <= steady["p95"] <= steady["p99"] <= steady["max"]
    assert "burn-down" in result.output and "jobs/s" in result.output
