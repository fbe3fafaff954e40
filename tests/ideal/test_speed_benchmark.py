"""benchmarks/speed.py runs, names the machine, and compares two of its results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_speed(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": ""}
    subprocess.run([sys.executable, str(REPO / "benchmarks/speed.py"), *args], check=True, env=env, capture_output=True)


def test_the_speed_benchmark_writes_json_and_markdown_and_compares(tmp_path):
    common = ["--stages", "prediction", "--repeats", "1", "--devices", "cpu", "--threads", "1", "--scale", "0.05"]
    run_speed(*common, "--label", "first", "--out", str(tmp_path / "first"))
    run_speed(*common, "--label", "second", "--out", str(tmp_path / "second"))
    result = json.loads((tmp_path / "first.json").read_text())
    assert result["threads"] == 1 and result["machine"]["cpu"]
    assert [(r["stage"], r["device"], r["precision"]) for r in result["rows"]] == [("prediction", "cpu", "float32")]
    assert result["rows"][0]["value"] > 0
    assert "| prediction | cpu | float32 |" in (tmp_path / "first.md").read_text()
    run_speed("--compare", str(tmp_path / "first.json"), str(tmp_path / "second.json"), "--out", str(tmp_path / "both"))
    assert "first -> second" in (tmp_path / "both.md").read_text()


def test_every_stage_runs_at_the_default_parameters(tmp_path):
    # The generator and distillation settings come from conf/base: a new parameter there must not break it.
    stages = "generation,distillation"
    common = ["--stages", stages, "--repeats", "1", "--devices", "cpu", "--threads", "1", "--scale", "0.05"]
    run_speed(*common, "--generator-steps", "1", "--precisions", "float32", "--out", str(tmp_path / "all"))
    result = json.loads((tmp_path / "all.json").read_text())
    assert sorted(r["stage"] for r in result["rows"]) == ["distillation", "generation"]
    assert all(r["value"] > 0 for r in result["rows"])
