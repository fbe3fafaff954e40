"""dvc.yaml mirrors the Kedro pipelines, and `dvc repro` reruns only what changed."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, make_project_copy

pytestmark = pytest.mark.timeout(600)


def test_dvc_yaml_matches_the_kedro_pipelines():
    from ideal_pipeline.dvc_stages import render

    committed = (REPO / "dvc.yaml").read_text()
    assert committed == render(REPO), "dvc.yaml is stale: run `python -m ideal_pipeline.dvc_stages`"


def test_stage_outputs_cover_every_persisted_output():
    import yaml

    from ideal_pipeline.dvc_stages import build_stages

    stages = build_stages(REPO)["stages"]
    assert list(stages) == ["data", "teacher", "ideal", "redistill", "evaluate"]
    ledger = stages["ideal"]["outs"][-1]
    assert ledger == {"data/03_primary/teacher_query_ledger.sqlite": {"persist": True}}
    assert {"conf/base/parameters_redistill.yml": ["redistill"]} in stages["redistill"]["params"]
    assert not any("parameters_redistill" in str(p) for p in stages["ideal"]["params"])
    catalog = yaml.safe_load((REPO / "conf/base/catalog.yml").read_text())
    owned = [str(o) if isinstance(o, str) else next(iter(o)) for s in stages.values() for o in s["outs"]]
    owned += ["data/08_reporting/evaluate/metrics.json", "data/08_reporting/evaluate/accuracy_vs_queries.csv"]
    # The bring-your-own-teacher pipeline replaces `teacher` by hand, outside DVC.
    outside_dvc = {"evaluation_query_ledger"}
    for name, entry in catalog.items():
        if name in outside_dvc:
            continue
        path = entry["filepath"].replace("${globals:victim_teacher_path}", "data/06_models/teacher/victim_teacher.pt2")
        assert any(path == o or path.startswith(o + "/") for o in owned), f"{name} ({path}) is in no DVC stage"


def dvc(project: Path, *args: str) -> str:
    env = {**os.environ, "KEDRO_ENV": "test", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args], cwd=project, env=env, capture_output=True, text=True, timeout=500
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", output))


def test_repro_twice_then_only_what_a_parameter_touches(tmp_path):
    project = make_project_copy(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    assert ran_stages(dvc(project, "repro")) == {"data", "teacher", "ideal", "redistill", "evaluate"}
    ledger = project / "data/03_primary/teacher_query_ledger.sqlite"
    paid = ledger.stat().st_size, ledger.read_bytes()

    assert ran_stages(dvc(project, "repro")) == set()

    evaluate_params = project / "conf/base/parameters_evaluate.yml"
    evaluate_params.write_text(evaluate_params.read_text().replace("grid_per_class: 10", "grid_per_class: 4"))
    assert ran_stages(dvc(project, "repro")) == {"evaluate"}

    redistill_params = project / "conf/base/parameters_redistill.yml"
    redistill_params.write_text(redistill_params.read_text().replace("seed: 0", "seed: 1"))
    assert ran_stages(dvc(project, "repro")) == {"redistill", "evaluate"}
    assert (ledger.stat().st_size, ledger.read_bytes()) == paid  # no query was spent
    assert "student_accuracy" in dvc(project, "metrics", "show")
