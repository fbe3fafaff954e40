"""IDEAL against query-matched baselines on one teacher/dataset, side by side.

    python benchmarks/compare.py --dataset fashion_mnist --queries 50000 --seeds 0 1 2 --methods all

Writes benchmarks/results/compare_<dataset>.csv (mean and std over seeds at each query
checkpoint), compare_<dataset>_runs.csv (one row per method, seed and checkpoint),
compare_<dataset>.md (tables) and compare_<dataset>.png (accuracy against queries).

Every trained method runs the same round loop with the pipeline's own node functions
(`initialize_student`, `label_with_teacher`, `distill_student`); only where a round's images
come from differs. So every method pays through AccountedTeacher into its own QueryLedger,
distils with the same settings and seeds, and makes exactly as many student updates as IDEAL.
`--merge DIR...` reports together runs written by separate processes (e.g. one per seed on a GPU).
See benchmarks/README.md for the methods and the choices behind them.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(BENCHMARKS))

from benchmark_datasets import DATASETS
from compare_report import STAGES, plot, summarize, write_markdown
from ideal_sweep import apply_override

from ideal_pipeline import realdata
from ideal_pipeline.ideal.distillation import predict
from ideal_pipeline.ideal.generation import quantize
from ideal_pipeline.models.generator import Generator
from ideal_pipeline.pipelines.ideal import nodes
from ideal_pipeline.pipelines.redistill.nodes import redistill_student
from ideal_pipeline.pipelines.teacher.nodes import (
    evaluate_victim_teacher,
    publish_teacher_api,
    train_victim_teacher,
)
from ideal_pipeline.runtime import input_shape, load_student, resolve_device
from ideal_pipeline.teacher.ledger import QueryLedger
from ideal_pipeline.teacher.local import load_model_file, save_model_file

logger = logging.getLogger("compare")

TRAINED = ("ideal", "ideal_redistilled", "uniform_noise", "gaussian_noise", "untrained_generator", "real_data")
COMPUTED = ("reference_accounting",)
METHODS = TRAINED + COMPUTED


# ---------------------------------------------------------------------------------- configuration


def base_params(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / f"conf/base/parameters_{name}.yml").read_text())[name]


def route_overrides(sections: dict[str, dict], assignments: list[str]) -> set[str]:
    """`teacher.X=` and `redistill.X=` go to those sections, anything else to ideal.

    Returns the ideal keys that were set, so the budget can tell what the user fixed.
    """
    ideal_keys = set()
    for assignment in assignments:
        key = assignment.split("=", 1)[0]
        section, _, rest = key.partition(".")
        if section in ("teacher", "redistill") and rest:
            apply_override(sections[section], assignment.split(".", 1)[1])
        else:
            apply_override(sections["ideal"], assignment)
            ideal_keys.add(key)
    return ideal_keys


def _exact_quotient(numerator: int, denominator: int, what: str) -> int:
    if denominator <= 0 or numerator % denominator:
        raise ValueError(
            f"{what}: {numerator} is not a multiple of {denominator}; choose --queries, --set rounds= and "
            "--set batch_size= so that Q = rounds x batch_size x (2 if label_mirrors else 1)"
        )
    return numerator // denominator


def fit_budget(params: dict[str, Any], queries: int | None, set_keys: set[str]) -> int:
    """Make rounds x samples per round equal Q, deriving whichever of rounds/batch_size was not set.

    The ledger's hard budget becomes Q too, so no method can spend more than it is credited with.
    """
    if queries is not None:
        mirrors = 2 if params["label_mirrors"] else 1
        if "rounds" in set_keys and "batch_size" not in set_keys:
            params["batch_size"] = _exact_quotient(queries, params["rounds"] * mirrors, "Q / (rounds x views)")
        elif "rounds" not in set_keys:
            params["rounds"] = _exact_quotient(queries, nodes.samples_per_round(params), "Q / samples per round")
    planned = params["rounds"] * nodes.samples_per_round(params)
    if queries is not None and planned != queries:
        raise ValueError(f"rounds x samples per round = {planned}, but --queries is {queries}")
    params["teacher_access"]["max_queries"] = planned
    return planned


def checkpoint_rounds(rounds: int, fractions: list[float]) -> list[int]:
    return sorted({min(rounds, max(1, math.ceil(f * rounds))) for f in fractions})


# ---------------------------------------------------------------------------------- teacher


def _teacher_recipe(dataset: str, split_seed: int, train: dict, teacher_params: dict) -> dict[str, Any]:
    ignored = ("device", "num_threads", "published_model_path", "class_names")
    return {
        "dataset": dataset,
        "split_seed": split_seed,
        "train_size": len(train["labels"]),
        **{k: v for k, v in teacher_params.items() if k not in ignored},
    }


def cached_teacher(dataset: str, split_seed: int, train: dict, teacher_params: dict, teacher_dir: Path) -> Path:
    """The victim's model file, trained once per recipe so every method and seed faces the same teacher."""
    path = teacher_dir / f"{dataset}.safetensors"
    recipe_path = path.with_suffix(".json")
    recipe = _teacher_recipe(dataset, split_seed, train, teacher_params)
    if path.exists() and recipe_path.exists() and json.loads(recipe_path.read_text()) == recipe:
        return path
    logger.info("training the %s victim teacher (%s)", dataset, recipe)
    (model, example), _ = train_victim_teacher(train, teacher_params)
    save_model_file(model, path, example)
    recipe_path.write_text(json.dumps(recipe, indent=1))
    return path


# ---------------------------------------------------------------------------------- sources

# (student state, pool summary, round) -> (uint8 images of one round, generator log)
Source = Callable[[dict, dict, int], tuple[torch.Tensor, dict]]
NO_GENERATOR = {"best_loss": float("nan"), "seconds": 0.0}


@dataclass
class Context:
    """What every run of one benchmark shares."""

    dataset: str
    train: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]
    api: dict[str, Any]
    teacher_test_predictions: torch.Tensor
    params: dict[str, Any]
    redistill_params: dict[str, Any]
    checkpoints: list[int]
    ledger_dir: Path
    methods: list[str]


def _round_seed(params: dict[str, Any], round_index: int) -> int:
    return params["seed"] * 100_003 + round_index  # the nodes' per-round seeding


def ideal_source(ctx: Context, params: dict[str, Any]) -> Source:
    previous = {}  # the last round's generator, for generator.reinitialize false

    def batch(student, summary, round_index):
        generator, log = nodes.train_round_generator(student, summary, ctx.api, params, previous.get("generator"))
        previous["generator"] = generator
        return nodes.materialize_synthetic(generator, ctx.api, params), log

    return batch


def noise_source(kind: str, ctx: Context, params: dict[str, Any]) -> Source:
    shape = (nodes.samples_per_round(params), *input_shape(ctx.api))

    def batch(student, summary, round_index):
        rng = torch.Generator().manual_seed(_round_seed(params, round_index))
        if kind == "uniform":
            x = torch.rand(shape, generator=rng)
        else:  # centred in the pixel range, wide enough to reach both ends; quantize clips to [0, 1]
            x = 0.5 + 0.25 * torch.randn(shape, generator=rng)
        return quantize(x), NO_GENERATOR

    return batch


def untrained_generator_source(ctx: Context, params: dict[str, Any]) -> Source:
    """IDEAL's generator, freshly initialised each round and never trained: what generation adds is its training."""
    g = params["generator"]
    channels, size, _ = input_shape(ctx.api)

    def batch(student, summary, round_index):
        seed = _round_seed(params, round_index)
        with torch.random.fork_rng(devices=[]):  # Generator() initialises from the global RNG
            torch.manual_seed(seed)
            state = Generator(g["nz"], g["ngf"], size, channels).state_dict()
        noise = torch.randn(params["batch_size"], g["nz"], generator=torch.Generator().manual_seed(seed))
        artifact = {f"state.{k}": v for k, v in state.items()}
        artifact.update(noise=noise, targets=torch.zeros(params["batch_size"], dtype=torch.int64))
        # The node adds mirrors exactly as for IDEAL, so both spend the same queries per round.
        return nodes.materialize_synthetic(artifact, ctx.api, params), NO_GENERATOR

    return batch


def real_data_source(ctx: Context, params: dict[str, Any]) -> Source:
    """Real training images in a seeded order. Past the end of the set they repeat: the ledger
    labels a repeat for free, so `queries_paid` then stays at the set's size (reported, not hidden)."""
    n, per_round = len(ctx.train["labels"]), nodes.samples_per_round(params)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(params["seed"]))

    def batch(student, summary, round_index):
        positions = torch.arange((round_index - 1) * per_round, round_index * per_round) % n
        return ctx.train["images"][order[positions]], NO_GENERATOR

    return batch


SOURCES: dict[str, Callable[[Context, dict], Source]] = {
    "ideal": ideal_source,
    "uniform_noise": lambda ctx, params: noise_source("uniform", ctx, params),
    "gaussian_noise": lambda ctx, params: noise_source("gaussian", ctx, params),
    "untrained_generator": untrained_generator_source,
    "real_data": real_data_source,
}


# ---------------------------------------------------------------------------------- runs


class Clock(Counter):
    """Seconds per stage, accumulated over a run."""

    @contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self[stage] += time.perf_counter() - started


def fresh_ledger(path: Path) -> QueryLedger:
    """Each method and seed starts from an empty ledger: a label paid by another run must not be free here."""
    for stale in (path, path.with_name(path.name + "-journal")):
        stale.unlink(missing_ok=True)
    return QueryLedger(path)


def score(ctx: Context, state: dict[str, torch.Tensor], clock: Clock) -> dict[str, float]:
    """Test accuracy, and agreement with the teacher's own test predictions (no queries)."""
    with clock("evaluation"):
        model = load_student(ctx.params["student"]["architecture"], ctx.api, state)
        predictions = predict(model, ctx.test["images"], resolve_device(ctx.params["device"]))
    return {
        "accuracy": (predictions == ctx.test["labels"]).float().mean().item(),
        "agreement": (predictions == ctx.teacher_test_predictions).float().mean().item(),
    }


def _row(method: str, seed: int, round_index: int, params: dict, ledger: QueryLedger, summary: dict,
         updates: int, metrics: dict, clock: Clock) -> dict[str, Any]:  # fmt: skip
    return {
        "method": method,
        "seed": seed,
        "round": round_index,
        "queries_budget": round_index * nodes.samples_per_round(params),
        "queries_paid": ledger.paid_queries(),  # what the ledger holds, not what arithmetic says
        "samples": summary["pool_size"],
        "student_updates": updates,
        **metrics,
        **{f"{stage}_s": clock[stage] for stage in STAGES},
        "total_s": sum(clock[stage] for stage in STAGES),
        "class_counts": " ".join(map(str, summary["class_counts"])),
    }


def redistilled_row(ctx: Context, ideal_row: dict, student: dict, params: dict, pool: list, clock: Clock) -> dict:
    """The query-free re-distilled student at this checkpoint; its cost includes IDEAL's up to here."""
    redistill = {**ctx.redistill_params, "seed": params["seed"]}
    own = Clock()
    with own("distillation"):
        state, _ = redistill_student(student, ctx.api, redistill, params["student"], *pool)
    metrics = score(ctx, state, own)
    combined = Clock({s: clock[s] for s in ("generation", "labelling", "distillation")}) + own
    extra = redistill["distill"]["epochs"] * math.ceil(ideal_row["samples"] / redistill["distill"]["batch_size"])
    return {
        **ideal_row,
        "method": "ideal_redistilled",
        "student_updates": ideal_row["student_updates"] + extra,
        **metrics,
        **{f"{stage}_s": combined[stage] for stage in STAGES},
        "total_s": sum(combined[stage] for stage in STAGES),
    }


def run_method(method: str, seed: int, ctx: Context) -> list[dict[str, Any]]:
    """One method, one seed: E rounds of (new images -> teacher labels -> distillation on the whole pool)."""
    params = copy.deepcopy(ctx.params)
    params["seed"] = seed
    ledger = fresh_ledger(ctx.ledger_dir / f"{method}_seed{seed}.sqlite")
    source = SOURCES[method](ctx, params)
    student, summary = nodes.initialize_student(ctx.api, params)
    pool, clock, rows, updates = [], Clock(), [], 0
    for round_index in range(1, params["rounds"] + 1):
        with clock("generation"):
            images, generator_log = source(student, summary, round_index)
        with clock("labelling"):
            labels, receipt = nodes.label_with_teacher(images, ctx.api, ledger, params)
        pool += [images, labels]
        with clock("distillation"):
            student, summary = nodes.distill_student(student, summary, generator_log, receipt, ctx.api, params, *pool)
        updates += params["distill"]["epochs"] * math.ceil(summary["pool_size"] / params["distill"]["batch_size"])
        if round_index not in ctx.checkpoints:
            continue
        row = _row(method, seed, round_index, params, ledger, summary, updates, score(ctx, student, clock), clock)
        rows.append(row)
        logger.info(
            "%s | %s seed %d | round %d/%d | %d queries paid | accuracy %.2f%% | %.0f s",
            ctx.dataset, method, seed, round_index, params["rounds"], row["queries_paid"], 100 * row["accuracy"], row["total_s"],
        )  # fmt: skip
        if method == "ideal" and "ideal_redistilled" in ctx.methods:
            rows.append(redistilled_row(ctx, row, student, params, pool, clock))
            logger.info(
                "%s | ideal_redistilled seed %d | accuracy %.2f%%", ctx.dataset, seed, 100 * rows[-1]["accuracy"]
            )
    ledger.close()
    return rows


def reference_accounting(params: dict[str, Any], checkpoints: list[int]) -> list[dict[str, Any]]:
    """What the reference code would pay for the same rounds: it re-labels its whole pool every
    round (augmented copies), so round r costs B*r and E rounds cost B*E*(E+1)/2. Computed, not trained."""
    b = params["batch_size"]
    return [
        {
            "method": "reference_accounting",
            "round": r,
            "queries_budget": r * nodes.samples_per_round(params),
            "queries_paid": b * r * (r + 1) // 2,
            "samples": b * r,
        }
        for r in checkpoints
    ]


# ---------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--queries", type=int, help="budget Q; rounds (or batch_size, if rounds is set) follow from it")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["all"], help=f"'all' or some of {', '.join(METHODS)}")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override: ideal params (generator.ngf=32), teacher.KEY or redistill.KEY")  # fmt: skip
    parser.add_argument("--checkpoints", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0], help="fractions of Q")
    parser.add_argument("--split-seed", type=int, default=0, help="train/test split of sets that ship without one")
    parser.add_argument("--test-limit", type=int, help="evaluate on a seeded subset of the test set")
    parser.add_argument("--out-dir", type=Path, default=BENCHMARKS / "results")
    parser.add_argument("--teacher-dir", type=Path, default=BENCHMARKS / "results/teachers")
    parser.add_argument("--prepare-teacher", action="store_true", help="train (or check) the cached teacher and stop")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="DIR",
                        help="report together the runs in these earlier --out-dir folders; runs nothing")  # fmt: skip
    args = parser.parse_args(argv)
    methods = list(METHODS) if args.methods == ["all"] else args.methods
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(METHODS)} or all")
    if not set(methods) & set(TRAINED):
        parser.error(f"choose at least one trained method ({', '.join(TRAINED)})")
    if "ideal_redistilled" in methods and "ideal" not in methods:
        methods.insert(0, "ideal")  # the re-distilled student is made from IDEAL's run
    args.methods = [m for m in METHODS if m in methods]
    return args


def build_context(args: argparse.Namespace) -> tuple[Context, dict[str, Any]]:
    sections = {name: base_params(name) for name in ("ideal", "teacher", "redistill")}
    sections["teacher"].update(DATASETS[args.dataset].teacher)
    for section in sections.values():
        section["device"], section["num_threads"] = args.device, args.threads
    set_keys = route_overrides(sections, args.set)
    params, teacher_params = sections["ideal"], sections["teacher"]
    queries = fit_budget(params, args.queries, set_keys)

    train, test = DATASETS[args.dataset].load(args.split_seed)
    test = realdata.subsample(test, args.test_limit, args.split_seed + 1)
    teacher_path = cached_teacher(args.dataset, args.split_seed, train, teacher_params, args.teacher_dir)
    teacher = load_model_file(teacher_path)
    predictions, teacher_metrics = evaluate_victim_teacher(teacher, test, teacher_params)
    api = publish_teacher_api(teacher, test, {**teacher_params, "published_model_path": str(teacher_path)})
    ledger_dir = args.out_dir / "ledgers" / args.dataset
    ledger_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        args.dataset, train, test, api, predictions, params, sections["redistill"],
        checkpoint_rounds(params["rounds"], args.checkpoints), ledger_dir, args.methods,
    )  # fmt: skip
    info = {
        "dataset": args.dataset,
        "queries": queries,
        "params": params,
        "redistill": sections["redistill"],
        "teacher_architecture": teacher_params["architecture"],
        "teacher_accuracy": teacher_metrics["teacher_accuracy"],
        "teacher_path": str(teacher_path.relative_to(ROOT) if teacher_path.is_relative_to(ROOT) else teacher_path),
        "teacher_sha256": hashlib.sha256(teacher_path.read_bytes()).hexdigest(),
        "checkpoints": ctx.checkpoints,
        "methods": args.methods,
        "class_names": api["class_names"],
        "train_size": len(train["labels"]),
        "test_size": len(test["labels"]),
        "seeds": len(args.seeds),
        "seed_list": args.seeds,
        "device": str(resolve_device(args.device)),
        "overrides": args.set,
    }
    return ctx, info


def write_reports(runs: pd.DataFrame, info: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """CSV (summary and per run), MD, PNG, and the run's settings as JSON (what --merge needs)."""
    dataset = info["dataset"]
    reference = (
        reference_accounting(info["params"], info["checkpoints"]) if "reference_accounting" in info["methods"] else []
    )
    summary = summarize(runs, reference)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"compare_{dataset}"
    paths = {
        "csv": stem.with_suffix(".csv"),
        "runs_csv": stem.with_name(stem.name + "_runs.csv"),
        "md": stem.with_suffix(".md"),
        "png": stem.with_suffix(".png"),
        "json": stem.with_suffix(".json"),
    }
    summary.insert(0, "dataset", dataset)
    summary.to_csv(paths["csv"], index=False)
    runs.insert(0, "dataset", dataset)
    runs.to_csv(paths["runs_csv"], index=False)
    write_markdown(paths["md"], summary, runs, info)
    plot(summary, dataset, info["teacher_accuracy"]).savefig(paths["png"])
    paths["json"].write_text(json.dumps(info, indent=1))
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths


# Settings that must agree for runs to be reported together (device and threads may differ).
MERGE_KEYS = ("queries", "params", "redistill", "teacher_sha256", "checkpoints", "train_size", "test_size")


def _comparable(info: dict[str, Any], key: str) -> Any:
    value = info[key]
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in ("device", "num_threads")}
    return value


def merge(dataset: str, parts: list[Path], out_dir: Path, command: str) -> dict[str, Path]:
    """One report from runs written by several processes (e.g. one seed each, in parallel on a GPU)."""
    infos = [json.loads((part / f"compare_{dataset}.json").read_text()) for part in parts]
    for key in MERGE_KEYS:
        if any(_comparable(i, key) != _comparable(infos[0], key) for i in infos):
            raise ValueError(f"cannot merge {[str(p) for p in parts]}: their {key} differ")
    runs = pd.concat([pd.read_csv(part / f"compare_{dataset}_runs.csv") for part in parts], ignore_index=True)
    repeated = runs[runs.duplicated(["method", "seed", "round"])]
    if len(repeated):
        raise ValueError(
            f"cannot merge: method/seed runs appear twice: {sorted(set(zip(repeated.method, repeated.seed)))}"
        )
    seeds = sorted(runs["seed"].unique().tolist())
    methods = {m for i in infos for m in i["methods"]}
    info = {
        **infos[0],
        "seeds": len(seeds),
        "seed_list": seeds,
        "methods": [m for m in METHODS if m in methods],
        "device": ", ".join(sorted({i["device"] for i in infos})),
        "command": [command] + [c for i in infos for c in i["command"]],
    }
    return write_reports(runs.drop(columns="dataset"), info, out_dir)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Run the benchmark (or --merge earlier runs); returns the paths of the files it wrote."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    command = "python benchmarks/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.merge:
        return merge(args.dataset, args.merge, args.out_dir, command)
    ctx, info = build_context(args)
    if args.prepare_teacher:
        logger.info("teacher ready: %s (%.2f%% test accuracy)", info["teacher_path"], 100 * info["teacher_accuracy"])
        return {"teacher": ROOT / info["teacher_path"]}
    info["command"] = [command]
    logger.info("%s: Q=%d, %d rounds, checkpoints at rounds %s, methods %s, seeds %s",
                args.dataset, info["queries"], ctx.params["rounds"], ctx.checkpoints, args.methods, args.seeds)  # fmt: skip
    rows = []
    for seed in args.seeds:
        for method in args.methods:
            if method in SOURCES:
                rows += run_method(method, seed, ctx)
    return {**write_reports(pd.DataFrame(rows), info, args.out_dir), "ledgers": ctx.ledger_dir}


if __name__ == "__main__":
    main()
