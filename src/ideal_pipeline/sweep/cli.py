"""`ideal-sweep SPEC.yaml`: run a sweep's trials on a Dask cluster, each a DVC experiment of this repository.

    ideal-sweep benchmarks/sweeps/smoke.yaml                              # an embedded cluster on this machine
    ideal-sweep benchmarks/sweeps/smoke.yaml --address tcp://head:8786    # a running cluster
    ideal-sweep benchmarks/sweeps/smoke.yaml --list                       # the trials, and which are done

Finished trials are DVC experiments of the repository (`dvc exp show`) and runs of the run record
(benchmarks/results/runs.json), which `python -m ideal_pipeline.reporting --dvc` reports. Rerunning
the same spec runs only the trials not finished yet. docs/sweeps.md has the details.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ideal_pipeline.sweep.driver import SweepOptions, main_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ideal-sweep", description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="the sweep spec (YAML), e.g. benchmarks/sweeps/smoke.yaml")
    parser.add_argument(
        "--address",
        help="a running Dask scheduler (tcp://host:8786, or its --scheduler-file); default: an embedded cluster here",
    )
    parser.add_argument("--repo", default=".", help="the project's git + DVC repository (default: here)")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where trials' workspaces, logs and results go, on storage every worker mounts at the same path "
        "(default: REPO/.dvc/tmp/sweeps/NAME)",
    )
    parser.add_argument(
        "--record",
        type=Path,
        default=Path("benchmarks/results/runs.json"),
        help="the run record finished trials are merged into, relative to REPO (default: %(default)s)",
    )
    parser.add_argument("--no-record", action="store_true", help="do not write the run record")
    parser.add_argument("--max-parallel", type=int, help="embedded cluster: at most this many trials at once")
    parser.add_argument(
        "--progress-every", type=float, default=30.0, metavar="S", help="seconds between progress lines"
    )
    parser.add_argument("--wait-for-workers", type=float, default=120.0, metavar="S", help="for a first worker")
    parser.add_argument("--allow-dirty", action="store_true", help="sweep HEAD although src/ or conf/ has changes")
    parser.add_argument("--keep-workspaces", action="store_true", help="keep finished trials' workspaces")
    parser.add_argument("--list", action="store_true", help="list the trials and which are done; run nothing")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    options = SweepOptions(
        address=args.address,
        workdir=args.workdir,
        record=None if args.no_record else (repo / args.record),
        max_parallel=args.max_parallel,
        progress_every_s=args.progress_every,
        allow_dirty=args.allow_dirty,
        wait_for_workers_s=args.wait_for_workers,
        keep_workspaces=args.keep_workspaces,
        list_only=args.list,
    )
    return main_run(args.spec, str(repo), options)
