"""dvc.yaml mirrors the Kedro pipelines; `dvc repro` reruns only what changed; `kedro run` + `dvc commit`
leave DVC in step; runs travel through the default remote."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, make_project_copy, paid_queries

pytestmark = pytest.mark.timeout(600)
BIN = Path(sys.executable).parent
SETTINGS = {
    "PATH": f"{BIN}:{os.environ['PATH']}",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def test_dvc_yaml_matches_the_kedro_pipelines():
    from ideal_pipeline.dvc_stages import render

    committed = (REPO / "dvc.yaml").read_text()
    assert committed == render(REPO), "dvc.yaml is stale: run `python -m ideal_pipeline.dvc_stages`"


def test_stages_read_only_the_parameters_their_nodes_read():
    from ideal_pipeline.dvc_stages import build_stages

    stages = build_stages(REPO)["stages"]
    assert list(stages) == ["data", "victim", "ideal", "baselines", "redistill", "evaluate"]
    # Its paid labels travel with DVC like the rest; DVC never deletes them before a rerun.
    assert {"data/03_primary/ideal": {"persist": True}} in stages["ideal"]["outs"]
    params = {
        stage: {k for entry in s.get("params", []) for keys in entry.values() for k in keys}
        for stage, s in stages.items()
    }
    assert "ideal" in params["ideal"] and "baselines.methods" in params["baselines"]
    for stage in ("redistill", "evaluate"):  # a budget or batch change of the teacher client reruns neither
        assert not {"ideal", "ideal.teacher_access", "ideal.generator"} & params[stage], stage
    assert "ideal.student" in params["redistill"] and "redistill" not in params["ideal"]


def test_dvc_exp_set_param_can_rewrite_every_setting_file(tmp_path):
    """`dvc exp run -S FILE:key=value` rewrites the file through Hydra, which fails on ${globals:...}."""
    import yaml
    from dvc.utils.hydra import apply_overrides

    paths_only = {"parameters_victim_api.yml"}  # paths shared with the catalog: not experiment settings
    files = sorted((REPO / "conf" / "base").glob("parameters_*.yml"))
    assert len(files) > 5
    for original in files:
        if original.name in paths_only:
            continue
        copy = tmp_path / original.name
        shutil.copy(original, copy)
        section, values = next(iter(yaml.safe_load(original.read_text()).items()))
        scalars = [(k, v) for k, v in values.items() if isinstance(v, int | float | str) and not isinstance(v, bool)]
        key, value = scalars[0] if scalars else next((k, v) for k, v in values.items() if isinstance(v, list))
        new_value = value + 1 if isinstance(value, int | float) else value
        override = f"{section}.{key}={'[' + ','.join(map(str, value)) + ']' if isinstance(value, list) else new_value}"
        apply_overrides(copy, [override])
        assert yaml.safe_load(copy.read_text())[section][key] == new_value, original.name


def test_stage_outputs_cover_every_persisted_output():
    from ideal_pipeline.dvc_stages import build_stages

    stages = build_stages(REPO)["stages"]
    owned = [str(o) if isinstance(o, str) else next(iter(o)) for s in stages.values() for o in s["outs"]]
    owned += [next(iter(m)) for s in stages.values() for m in s.get("metrics", []) + s.get("plots", [])]
    for path in (
        "data/05_model_input/ideal/round_001/synthetic_images.safetensors",
        "data/06_models/ideal/round_007/student.safetensors",
        "data/07_model_output/baselines/real_data/round_001/teacher_labels.safetensors",
        "data/08_reporting/evaluate/metrics.json",
        "data/06_models/redistill/redistilled_student.safetensors",
    ):
        assert any(path == o or path.startswith(o + "/") for o in owned), path


def run(project: Path, *args: str, env: dict | None = None, ok: bool = True) -> str:
    """`args` in `project`, in this test's environment (its label store); must succeed unless `ok` is False."""
    environment = {**os.environ, **SETTINGS, **(env or {})}
    done = subprocess.run(args, cwd=project, env=environment, capture_output=True, text=True, timeout=500, check=False)
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done.stdout + done.stderr


def dvc(project: Path, *args: str, **options) -> str:
    return run(project, str(BIN / "dvc"), *args, **options)


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", output))


def set_parameter(project: Path, dotted: str, value) -> None:
    """Write one parameter into its conf/base file, as `dvc exp run -S` would."""
    section, *keys = dotted.split(".")
    path = project / f"conf/base/parameters_{section}.yml"
    params = yaml.safe_load(path.read_text())
    node = params[section]
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def git_project(tmp_path: Path) -> Path:
    """A project whose conf/base holds the tiny test settings: what DVC records is what ran."""
    project = make_project_copy(tmp_path / "project")
    for tiny in sorted((project / "conf/test").glob("parameters_*.yml")):
        for section, values in yaml.safe_load(tiny.read_text()).items():
            for dotted, value in flat(values, section):
                set_parameter(project, dotted, value)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    return project


def flat(values: dict, prefix: str) -> list[tuple[str, object]]:
    items = []
    for key, value in values.items():
        items += flat(value, f"{prefix}.{key}") if isinstance(value, dict) else [(f"{prefix}.{key}", value)]
    return items


def test_repro_twice_then_only_what_a_parameter_touches(tmp_path, label_store):
    project = git_project(tmp_path)
    assert ran_stages(dvc(project, "repro")) == {"data", "victim", "ideal", "baselines", "redistill", "evaluate"}
    paid = paid_queries(label_store)

    assert ran_stages(dvc(project, "repro")) == set()

    set_parameter(project, "evaluate.grid_per_class", 4)
    assert ran_stages(dvc(project, "repro")) == {"evaluate"}

    set_parameter(project, "redistill.seed", 1)
    assert ran_stages(dvc(project, "repro")) == {"redistill", "evaluate"}
    assert paid_queries(label_store) == paid  # no query was spent

    set_parameter(project, "ideal.teacher_access.max_batch", 14)
    assert ran_stages(dvc(project, "repro")) == {"ideal", "baselines"}  # same labels: nothing downstream changed
    assert paid_queries(label_store) == paid  # every label came from the ledger
    assert "student_accuracy" in dvc(project, "metrics", "show")


def test_kedro_run_then_dvc_commit_leaves_dvc_clean_runs_travel_and_seeds_are_experiments(tmp_path, label_store):
    project = git_project(tmp_path)
    paid = []
    for _ in range(2):  # the README's main command (`make run`: `kedro run`, then a checked `dvc commit`), twice
        run(project, str(BIN / "kedro"), "run")
        run(project, sys.executable, "-m", "ideal_pipeline.dvc_stages", "--commit")
        paid.append(paid_queries(label_store))
    assert paid[0] == paid[1] > 0
    assert "up to date" in dvc(project, "status")
    assert ran_stages(dvc(project, "repro")) == set()

    dvc(project, "push")
    assert (project / "dvc-remote").is_dir()
    student = project / "data/06_models/ideal/round_002/student.safetensors"
    before = student.read_bytes()
    shutil.rmtree(project / ".dvc/cache")
    shutil.rmtree(project / "data/06_models/ideal")
    dvc(project, "pull")
    assert student.read_bytes() == before
    assert "up to date" in dvc(project, "status")

    # A seed is a parameter change run as a DVC experiment in its own workspace, under a budget of its
    # own: a budget of exactly its plan suffices.
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "seed 0")
    ideal = "conf/base/parameters_ideal.yml"
    dvc(
        project,
        "exp",
        "run",
        "--temp",
        "-S",
        f"{ideal}:ideal.seed=1",
        "-S",
        f"{ideal}:ideal.teacher_access.max_queries=80",
    )
    run(project, sys.executable, "-m", "ideal_pipeline.reporting", "--dvc", "--out-dir", str(tmp_path / "report"))
    final = pd.read_csv(tmp_path / "report" / "comparison.csv").set_index("row").loc["IDEAL, final student"]
    assert final["seeds"] == 2 and final["seed_list"] == "0 1"  # the commit (seed 0) and the experiment (seed 1)


def test_dvc_refuses_to_record_a_run_whose_parameters_it_does_not_list(tmp_path, label_store):
    """dvc.yaml lists conf/base: another environment, conf/local or a conf/base-less run is never recorded."""
    project = git_project(tmp_path)
    refused = dvc(project, "repro", "data", env={"KEDRO_ENV": "test"}, ok=False)
    assert "environment 'test' writes under data/envs/test" in refused
    (project / "conf/local/parameters_data.yml").write_text("data:\n  test_limit: 200\n")
    assert "data.test_limit" in dvc(project, "repro", "data", ok=False)
    run(project, str(BIN / "kedro"), "run", "--pipelines", "data")  # outside DVC, conf/local is the user's to use
    refused = run(project, sys.executable, "-m", "ideal_pipeline.dvc_stages", "--commit", ok=False)
    assert "not recorded in dvc.lock" in refused and "data.test_limit" in refused
    assert not (project / "dvc.lock").exists()
