"""Run IDEAL round by round outside Kedro, with the pipeline's own node functions, and record
student accuracy against queries plus wall time per stage.

Used to choose defaults by measurement (and on a GPU when one is lent):

    python benchmarks/ideal_sweep.py --name base --out benchmarks/results/sweep_base.json \
        --set generator.g_steps=5 --set rounds=50 --set batch_size=500

The teacher is trained once per --teacher path and reused, so variants see the same victim.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ideal_pipeline import realdata  # noqa: E402
from ideal_pipeline.ideal.distillation import DistillSettings, distill, predict  # noqa: E402
from ideal_pipeline.pipelines.ideal import nodes  # noqa: E402
from ideal_pipeline.pipelines.teacher.nodes import train_victim_teacher  # noqa: E402
from ideal_pipeline.runtime import load_student  # noqa: E402
from ideal_pipeline.teacher.ledger import QueryLedger  # noqa: E402
from ideal_pipeline.teacher.local import load_model_file, save_model_file  # noqa: E402


def apply_override(params: dict, assignment: str) -> None:
    key, value = assignment.split("=", 1)
    *path, leaf = key.split(".")
    for part in path:
        params = params[part]
    if leaf not in params:
        raise KeyError(f"unknown parameter {key}")
    params[leaf] = yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--set", action="append", default=[], help="ideal parameter override, e.g. generator.g_steps=5")
    parser.add_argument("--teacher", default="benchmarks/results/teacher.safetensors")
    parser.add_argument("--data", default="data/01_raw/fashion-mnist")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--redistill-epochs", type=int, default=5)
    args = parser.parse_args()

    params = yaml.safe_load((ROOT / "conf/base/parameters_ideal.yml").read_text())["ideal"]
    teacher_params = yaml.safe_load((ROOT / "conf/base/parameters_teacher.yml").read_text())["teacher"]
    params["device"] = teacher_params["device"] = args.device
    for assignment in args.set:
        apply_override(params, assignment)
    train = realdata.load_idx_split(args.data, "train")
    test = realdata.load_idx_split(args.data, "test")

    teacher_path = Path(args.teacher)
    if not teacher_path.exists():
        (model, example), _ = train_victim_teacher(train, teacher_params)
        save_model_file(model, teacher_path, example)
    api = {"kind": "model_file", "model_path": str(teacher_path), "input_shape": [1, 28, 28], "num_classes": 10}
    teacher_test = predict(load_model_file(teacher_path), test["images"], torch.device("cpu"))
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    arch = params["student"]["architecture"]

    def accuracy(state) -> float:
        return (predict(load_student(arch, api, state), test["images"], device) == test["labels"]).float().mean().item()

    with tempfile.TemporaryDirectory() as tmp:
        ledger = QueryLedger(Path(tmp) / "ledger.sqlite")
        student, summary = nodes.initialize_student(api, params)
        pool, curve, started, generator = [], [], time.perf_counter(), None
        for _ in range(params["rounds"]):
            generator, log = nodes.train_round_generator(student, summary, api, params, generator)
            images = nodes.materialize_synthetic(generator, api, params)
            labels, receipt = nodes.label_with_teacher(images, api, ledger, params)
            pool += [images, labels]
            student, summary = nodes.distill_student(student, summary, log, receipt, api, params, *pool)
            curve.append({**{k: summary[k] for k in ("round", "queries_used", "generation_seconds", "distill_seconds")}, "student_accuracy": accuracy(student)})
        ideal_seconds = time.perf_counter() - started
        paid = ledger.paid_queries()

    images, labels = torch.cat(pool[0::2]), torch.cat(pool[1::2])
    redistilled = {}
    for init, lr in (("final_student", 0.01), ("final_student", 0.002), ("fresh", 0.01)):
        model = load_student(arch, api, student) if init == "final_student" else load_student(arch, api, nodes.initialize_student(api, params)[0])
        distill(model, images, labels, DistillSettings(lr=lr, epochs=args.redistill_epochs), seed=0, device=device)
        redistilled[f"{init}_lr{lr}"] = (predict(model, test["images"], device) == test["labels"]).float().mean().item()
    result = {
        "name": args.name,
        "overrides": args.set,
        "device": str(device),
        "teacher_accuracy": (teacher_test == test["labels"]).float().mean().item(),
        "queries_used": summary["queries_used"],
        "ledger_paid": paid,
        "final_student_accuracy": curve[-1]["student_accuracy"],
        "mean_last5_accuracy": sum(c["student_accuracy"] for c in curve[-5:]) / min(5, len(curve)),
        "redistilled": redistilled,
        "class_counts": summary["class_counts"],
        "ideal_seconds": ideal_seconds,
        "curve": curve,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}))


if __name__ == "__main__":
    main()
