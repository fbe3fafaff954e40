"""A CIFAR-10 victim on this machine: the project's data and victim nodes, timed, with the machine's load.

    python benchmarks/cifar10_victim.py --threads 2 --epochs 60          # writes benchmarks/results/cifar10_victim.json
    python benchmarks/cifar10_victim.py --set architecture=resnet8 --epochs 30 --out /tmp/r8.json
    python benchmarks/cifar10_victim.py --train-limit 512 --test-limit 256 --epochs 1 --out /tmp/smoke.json

Runs `load_real_data` (data.source cifar10: 45,000 training images, 5,000 held out for validation
as in the pipeline), `train_victim_teacher` and `evaluate_victim_teacher` in-process with the
parameters of conf/base plus the CIFAR-10 recipe below (each overridable with --set key=value), and
writes nothing under data/. Wall time covers training only; the load average is sampled every 10 s,
and the process's CPU seconds say how much of the machine the run really had. A shared machine
makes every figure here pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
from pathlib import Path
from typing import Self

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
# The 2-core CPU recipe (conf/base/parameters_victim.yml names the Fashion-MNIST defaults).
CIFAR10_RECIPE = {
    "architecture": "resnet20",
    "class_names": None,
    "epochs": 60,
    "batch_size": 256,
    "lr": 0.2,
    "weight_decay": 5e-4,
    "optimizer": "sgd",
    "label_smoothing": 0.1,
    "augment": True,
    "channels_last": True,
    "precision": "bf16",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=CIFAR10_RECIPE["epochs"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a victim parameter (YAML)")
    parser.add_argument("--train-limit", type=int, default=None, help="fewer training images (smoke tests)")
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/cifar10_victim.json"))
    return parser.parse_args()


class LoadSampler:
    """The 1-minute load average every `interval` seconds, on a daemon thread."""

    def __init__(self, interval: float = 10.0):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        values = self.samples or [os.getloadavg()[0]]
        return {"mean": round(sum(values) / len(values), 2), "max": round(max(values), 2), "samples": len(values)}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported
    sys.path.insert(0, str(ROOT / "src"))
    from ideal_pipeline.config import parameters_from_conf
    from ideal_pipeline.parameter_schema import ComputeParams, DataParams, VictimParams
    from ideal_pipeline.pipelines.data.nodes import load_real_data
    from ideal_pipeline.pipelines.victim.nodes import evaluate_victim_teacher, train_victim_teacher

    base = parameters_from_conf(ROOT, "base")
    data = dict(base["data"], source="cifar10", train_limit=args.train_limit, test_limit=args.test_limit)
    data.update(cifar10_dir=str(ROOT / data["cifar10_dir"]), torchvision_root=str(ROOT / data["torchvision_root"]))
    victim = {**base["victim"], **CIFAR10_RECIPE, "epochs": args.epochs}
    for item in args.set:
        key, value = item.split("=", 1)
        victim[key] = yaml.safe_load(value)
    compute = ComputeParams(device="cpu", num_threads=args.threads, precision="fp32")

    train, validation, test = load_real_data(DataParams.model_validate(data))
    load_before = os.getloadavg()
    cpu_before = os.times()
    with LoadSampler() as load:
        (model, _), log = train_victim_teacher(train, VictimParams.model_validate(victim), compute)
    cpu = os.times()
    cpu_seconds = (cpu.user - cpu_before.user) + (cpu.system - cpu_before.system)
    _, test_metrics = evaluate_victim_teacher(model, test)
    _, validation_metrics = evaluate_victim_teacher(model, validation)
    seconds = log["seconds"]
    result = {
        "test_accuracy": round(test_metrics["teacher_accuracy"], 4),
        "validation_accuracy": round(validation_metrics["teacher_accuracy"], 4),
        "train_seconds": round(seconds, 1),
        "seconds_per_epoch": round(seconds / victim["epochs"], 1),
        "epochs": victim["epochs"],
        "images": {"train": len(train["labels"]), "validation": len(validation["labels"]), "test": len(test["labels"])},
        "victim": victim,
        "epoch_losses": [round(v, 4) for v in log["epoch_losses"]],
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": {
            "cpu": cpu_model(),
            "cores": len(os.sched_getaffinity(0)),
            "threads": args.threads,
            "gpu": None,
            "torch": torch.__version__,
            "load_average_1min_during_training": load.summary(),
            "load_average_before": [round(v, 2) for v in load_before],
            "cpu_seconds": round(cpu_seconds, 1),
            # 1.0 = the run had its threads' cores to itself all the time.
            "cpu_share_of_threads": round(cpu_seconds / (seconds * args.threads), 2),
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("test_accuracy", "validation_accuracy", "train_seconds", "epochs")}))
    print(json.dumps(result["machine"]))


if __name__ == "__main__":
    main()
