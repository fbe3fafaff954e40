"""One comparison report over finished runs: IDEAL and its baselines, mean, std and 95% interval over seeds.

    python -m ideal_pipeline.reporting --dvc                 # every DVC experiment of this repository
    python -m ideal_pipeline.reporting --runs RUN_DIR ...    # project copies that ran `kedro run` (no DVC)
    python -m ideal_pipeline.reporting                       # only the runs in the record

Every run reported is also kept in a record (`--record`, default benchmarks/results/runs.json, in
git): DVC experiments live in one checkout's git refs and are gone with it, the record is not.
Each report merges the record with the new runs and rewrites it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ideal_pipeline.reporting.render import write_report
from ideal_pipeline.reporting.runs import (
    RECORD,
    merge_runs,
    project_defaults,
    read_record,
    run_from_project,
    runs_from_dvc,
    write_record,
)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(prog="python -m ideal_pipeline.reporting", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dvc", nargs="?", const=".", type=Path, metavar="REPO", help="DVC experiments of REPO")
    source.add_argument("--runs", nargs="+", type=Path, metavar="DIR", help="project copies that ran `kedro run`")
    parser.add_argument("--env", default=None, help="Kedro environment the --runs used")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--defaults",
        type=Path,
        default=Path("."),
        metavar="PROJECT",
        help="name configurations by what they change from this project's parameters (default: here)",
    )
    parser.add_argument("--record", type=Path, default=RECORD, help="runs recorded so far, merged and rewritten")
    args = parser.parse_args(argv)
    if args.dvc:
        new = runs_from_dvc(args.dvc)
    else:
        new = [run_from_project(p, args.env) for p in args.runs or []]
    runs = merge_runs(read_record(args.record), new)
    command = "python -m ideal_pipeline.reporting " + " ".join(sys.argv[1:] if argv is None else argv)
    paths = write_report(runs, args.out_dir, command, project_defaults(args.defaults))
    write_record(runs, args.record)
    paths["record"] = args.record
    print("\n".join(str(p) for p in paths.values()))
    return paths
