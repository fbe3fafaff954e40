"""Re-distillation epochs, measured on the pool a finished `kedro run` left behind (0 queries).

    python benchmarks/redistill_epochs.py --project . --epochs 1 2 5 10 20 --fresh-epochs 10

Loads the final round's student, the labelled pool and the real test set through the project's
catalog, runs the `redistill` node once per setting (its own parameters, only `init` and
`distill.epochs` changed) and writes benchmarks/results/redistill_epochs.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent / "src"))

from ideal_pipeline.ideal.distillation import predict
from ideal_pipeline.pipelines.ideal.pipeline import pool_datasets, student_dataset
from ideal_pipeline.pipelines.redistill.nodes import redistill_student
from ideal_pipeline.runtime import load_student, resolve_device


def load_run(project: Path, env: str | None, rounds: int | None):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params
        rounds = rounds or params["ideal"]["rounds"]
        pool = [catalog.load(name) for name in pool_datasets(rounds)]
        return params, catalog.load(student_dataset(rounds)), catalog.load("teacher_api"), catalog.load("real_test"), pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--env", help="the Kedro environment the run used")
    parser.add_argument("--rounds", type=int, help="rounds the run made, if not its parameters' ideal.rounds")
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 5, 10, 20])
    parser.add_argument("--fresh-epochs", type=int, nargs="*", default=[10])
    parser.add_argument("--out", type=Path, default=BENCHMARKS / "results" / "redistill_epochs")
    args = parser.parse_args()
    params, final_student, api, test, pool = load_run(args.project.resolve(), args.env, args.rounds)
    architecture = params["ideal"]["student"]["architecture"]
    device = resolve_device(params["redistill"]["device"])

    def accuracy(state) -> float:
        return (predict(load_student(architecture, api, state), test["images"], device) == test["labels"]).float().mean().item()

    rows = [{"init": "final_student", "epochs": 0, "accuracy": accuracy(final_student), "seconds": 0.0}]
    settings = [("final_student", e) for e in args.epochs] + [("fresh", e) for e in args.fresh_epochs]
    for init, epochs in settings:
        redistill = copy.deepcopy(params["redistill"])
        redistill["init"], redistill["distill"]["epochs"] = init, epochs
        started = time.perf_counter()
        state, _ = redistill_student(final_student, api, redistill, params["ideal"]["student"], *pool)
        rows.append({"init": init, "epochs": epochs, "accuracy": accuracy(state), "seconds": time.perf_counter() - started})
        print(json.dumps(rows[-1]), flush=True)
    queries = sum(len(labels) for labels in pool[1::2])
    lines = [
        "# Re-distillation epochs (0 queries)",
        "",
        f"`python benchmarks/redistill_epochs.py {' '.join(sys.argv[1:])}` on the pool a `kedro run` left",
        (
            f"({queries:,} labelled samples, seed {params['ideal']['seed']}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads). Epochs 0 is the round-by-round student. One run: differences of"
            " a few tenths of a point are noise."
        ),
        "",
        "| init | epochs | test accuracy % | seconds |",
        "|---|---|---|---|",
        *(f"| {r['init']} | {r['epochs']} | {100 * r['accuracy']:.2f} | {r['seconds']:.0f} |" for r in rows),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"queries": queries, "rows": rows}, indent=1))
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
