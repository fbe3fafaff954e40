"""Throughput of IDEAL's stages on this machine: generator steps, distillation, labelling.

    python benchmarks/speed.py   # writes benchmarks/results/speed.json

Each figure is the median of `--repeats` timed runs after one warm-up, with the default
parameters of conf/base/parameters_ideal.yml unless a row says otherwise.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ideal_pipeline.ideal.distillation import DistillSettings, distill  # noqa: E402
from ideal_pipeline.ideal.generation import GeneratorSettings, train_generator  # noqa: E402
from ideal_pipeline.ideal.targets import balanced_targets  # noqa: E402
from ideal_pipeline.models.classifiers import build_classifier  # noqa: E402
from ideal_pipeline.teacher.blackbox import AccountedTeacher  # noqa: E402
from ideal_pipeline.teacher.ledger import QueryLedger  # noqa: E402
from ideal_pipeline.teacher.local import LocalModelTeacher, save_model_file  # noqa: E402

CPU = torch.device("cpu")


def median_seconds(work, repeats: int) -> float:
    work()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/speed.json"))
    args = parser.parse_args()
    params = yaml.safe_load((ROOT / "conf/base/parameters_ideal.yml").read_text())["ideal"]
    batch = params["batch_size"]
    generator_params = {k: v for k, v in params["generator"].items() if k != "target_sampling"}
    rows = []

    for student in ("lenet", "convnet"):
        for channels_last in (True, False):
            settings = GeneratorSettings(**{**generator_params, "g_steps": 2, "channels_last": channels_last})
            torch.manual_seed(0)
            model = build_classifier(student, 1, 10, 28)
            seconds = median_seconds(lambda: train_generator(model, balanced_targets(batch, 10), settings, 28, 1, 0, CPU), args.repeats) / 2
            rows.append({"stage": "generation", "student": student, "channels_last": channels_last, "ngf": settings.ngf,
                         "batch": batch, "seconds_per_step": seconds, "image_steps_per_s": batch / seconds})  # fmt: skip

    pool = torch.randint(0, 256, (5000, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (5000,))
    for student in ("lenet", "convnet"):
        model = build_classifier(student, 1, 10, 28)
        seconds = median_seconds(lambda: distill(model, pool, labels, DistillSettings(batch_size=params["distill"]["batch_size"]), 0, CPU), args.repeats)
        rows.append({"stage": "distillation", "student": student, "samples_per_s": len(pool) / seconds})

    with tempfile.TemporaryDirectory() as tmp:
        save_model_file(build_classifier("convnet", 1, 10, 28).eval(), Path(tmp) / "teacher.safetensors", torch.rand(2, 1, 28, 28))
        teacher = LocalModelTeacher(Path(tmp) / "teacher.safetensors")
        images = torch.randint(0, 256, (2 * batch, 1, 28, 28), dtype=torch.uint8)
        counter = iter(range(10_000))

        def label_fresh():  # a new ledger each time: every image is paid, as in a first run
            AccountedTeacher(teacher, QueryLedger(Path(tmp) / f"ledger{next(counter)}.sqlite"), 10**9).label(images)

        seconds = median_seconds(label_fresh, args.repeats)
        rows.append({"stage": "labelling (convnet teacher, ledger commits)", "samples_per_s": len(images) / seconds})

    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads", "torch": torch.__version__, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1))
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
