"""Writes dvc.yaml from the Kedro pipelines, so the two can never disagree.

    python -m ideal_pipeline.dvc_stages           # rewrite dvc.yaml
    python -m ideal_pipeline.dvc_stages --check   # exit 1 if dvc.yaml is stale
    python -m ideal_pipeline.dvc_stages --commit  # `dvc commit` a `kedro run`, if DVC can record it truly

One DVC stage per pipeline of the default run. A stage's outputs are the folders its persisted
outputs live in; its dependencies are the folders of the persisted inputs other stages write,
its own code, the raw data, and exactly the parameter keys its nodes read (`params:ideal.student`
-> `ideal.student`), so a parameter reruns only the stages that read it.

Paid labels live in the label store outside the workspace; the chunks a stage exports of them
(`*.paid_labels`) are outputs of that stage, cached and pushed like the rest, with `persist: true`:
DVC would otherwise delete them before rerunning the stage, before a store that lacks them (a
fresh clone on another machine) could merge them in.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

from ideal_pipeline.config import UnrecordableRun, check_recordable, parameters_from_conf
from ideal_pipeline.parameter_schema import BASELINES
from ideal_pipeline.pipeline_registry import DEFAULT_PIPELINES
from ideal_pipeline.pipelines.baselines import pipeline as baselines

SHARED_CODE = [
    "src/ideal_pipeline/compute.py",
    "src/ideal_pipeline/datasets",
    "src/ideal_pipeline/ideal",
    "src/ideal_pipeline/models",
    "src/ideal_pipeline/parameter_schema.py",
    "src/ideal_pipeline/rounds",
    "src/ideal_pipeline/teacher",
]
RAW = Path("data/01_raw")
RAW_DATA = str(RAW / "fashion-mnist")
PAID_LABELS_SUFFIX = "paid_labels"
# Parameters that shape a stage's graph rather than feed a node.
SHAPE_PARAMS = {"baselines": ["baselines.methods"]}
METRICS = {
    "evaluate": ["data/08_reporting/evaluate/metrics.json"],
    "baselines": ["data/08_reporting/baselines_metrics.json"],
}
PLOTS = {
    "evaluate": {"data/08_reporting/evaluate/accuracy_vs_queries.csv": {"x": "queries_used", "y": "student_accuracy"}}
}


def _folder(filepath: str) -> str:
    """data/<layer>/<stage folder>: the unit a stage owns."""
    parts = Path(filepath).parts
    return str(Path(*parts[:3])) if len(parts) > 3 else filepath


def _pipeline_code(stage: str) -> list[str]:
    return [f"src/ideal_pipeline/pipelines/{stage}"]


def build_stages(project_path: Path, env: str | None = None) -> dict:
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project_path)
    with KedroSession.create(project_path=project_path, env=env) as session:
        catalog = session.load_context().catalog
        registered = {name: pipelines[name] for name in DEFAULT_PIPELINES}

    def filepath(name: str) -> str | None:
        config = catalog.config_resolver.resolve_pattern(name) or {}
        path = config.get("filepath") or config.get("path") or config.get("export_dir")
        return str(Path(path).resolve().relative_to(project_path.resolve())) if path else None

    # dvc.yaml is static: it describes the baselines stage with every baseline in it.
    shapes = {**registered, "baselines": baselines.create_pipeline(rounds=1, methods=BASELINES)}
    producer = {out: stage for stage, pipe in shapes.items() for out in pipe.all_outputs()}
    folder_owner = {_folder(filepath(out)): stage for out, stage in producer.items() if filepath(out)}
    stages = {}
    for stage, pipe in shapes.items():
        # The paid labels a stage exports are read by its nodes (the store) and written into its folder.
        paid_labels = {name for name in pipe.inputs() if name.endswith(PAID_LABELS_SUFFIX)}
        persisted = {_folder(filepath(name)) for name in paid_labels}
        datasets = pipe.all_outputs() | paid_labels
        reports = set(METRICS.get(stage, [])) | set(PLOTS.get(stage, {}))
        outs = sorted({_folder(filepath(name)) for name in datasets if filepath(name)} - reports)
        # Inputs read from another stage's folders, including the readers of many rounds (the pool).
        deps = {_folder(filepath(name)) for name in pipe.inputs() if filepath(name)} & set(folder_owner) - set(outs)
        deps |= {*_pipeline_code(stage), *SHARED_CODE} | ({RAW_DATA} if stage == "data" else set())
        params: dict[str, list[str]] = {}
        keys = {name.removeprefix("params:") for name in pipe.inputs() if name.startswith("params:")}
        keys |= set(SHAPE_PARAMS.get(stage, []))
        keys = {k for k in keys if not any(k.startswith(other + ".") for other in keys)}  # a section covers its keys
        for key in sorted(keys):
            params.setdefault(f"conf/base/parameters_{key.split('.')[0]}.yml", []).append(key)
        entry: dict = {"cmd": f"kedro run --pipelines {stage}", "deps": sorted(deps)}
        if params:
            entry["params"] = [{file: keys} for file, keys in params.items()]
        out_entries: list = []
        for out in outs:
            if reports and any(report.startswith(out + "/") for report in reports):
                # The folder holds metrics/plots that git keeps: list its other files one by one.
                owned = sorted(filepath(n) for n in datasets if filepath(n) and _folder(filepath(n)) == out)
                out_entries += [path for path in owned if path not in reports]
            else:
                out_entries.append({out: {"persist": True}} if out in persisted else out)
        entry["outs"] = out_entries
        timing = f"data/08_reporting/timing/{stage}.json"  # seconds per step (hooks.NodeTimingHook)
        entry["metrics"] = [{path: {"cache": False}} for path in [*METRICS.get(stage, []), timing]]
        if stage in PLOTS:
            entry["plots"] = [{path: {"cache": False, **axes}} for path, axes in PLOTS[stage].items()]
        stages[stage] = entry
    return {"stages": stages}


def render(project_path: Path) -> str:
    header = "# Generated by `python -m ideal_pipeline.dvc_stages` from the Kedro pipelines; do not edit by hand.\n"
    return header + yaml.safe_dump(build_stages(project_path), sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write dvc.yaml from the Kedro pipelines.")
    parser.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml differs from the pipelines")
    parser.add_argument(
        "--commit",
        action="store_true",
        help="record the last `kedro run` in dvc.lock, refused when it ran with parameters other than conf/base's",
    )
    parser.add_argument("--project", default=".", type=Path)
    args = parser.parse_args(argv)
    project = args.project.resolve()
    if args.commit:
        env = os.environ.get("KEDRO_ENV")
        try:
            check_recordable(project, env, parameters_from_conf(project, env))
        except UnrecordableRun as refusal:
            print(f"not recorded in dvc.lock: {refusal}", file=sys.stderr)
            return 1
        # The stages, and the raw data sets present: one tracked with `dvc add` but never fetched on this
        # machine (CIFAR-10 without `make setup-cifar10`) is not part of the run.
        raw = [str(p.relative_to(project)) for p in (project / RAW).glob("*.dvc") if p.with_suffix("").exists()]
        command = ["dvc", "commit", "--force", "--quiet", *DEFAULT_PIPELINES, *raw]
        return subprocess.run(command, cwd=project, check=False).returncode
    text = render(project)
    target = project / "dvc.yaml"
    if args.check:
        if not target.exists() or target.read_text() != text:
            print(
                "dvc.yaml is out of date with the Kedro pipelines: run `python -m ideal_pipeline.dvc_stages`",
                file=sys.stderr,
            )
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
