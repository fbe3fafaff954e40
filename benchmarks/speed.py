"""Throughput of each IDEAL stage on this machine, per device and precision.

    python benchmarks/speed.py --threads 2                      # writes benchmarks/results/speed.{json,md}
    python benchmarks/speed.py --source /tmp/old/src --label before --out /tmp/before
    python benchmarks/speed.py --compare /tmp/before.json benchmarks/results/speed.json --out /tmp/before_after

Stages, at the defaults of conf/base/parameters_ideal.yml and the teacher's batch size:
- generation: generator steps/s, B 250, conf/base's width (ngf), 28x28x1, LeNet student; one `train_generator`
  call of --generator-steps steps, its set-up included (as in a round);
- distillation: samples/s, one pass of a LeNet student over 5,000 pooled uint8 images, batch 250;
- victim_training: samples/s, one epoch of the ConvNet teacher over 2,560 images, batch 128;
- labelling: samples/s, 500 images through AccountedTeacher (a fresh SQLite ledger each time, so
  every image is paid) in front of a local ConvNet teacher file (.safetensors);
- prediction: samples/s, LeNet over 10,000 images (evaluation).
Each figure is the median of --repeats timed runs after one warm-up; the CPU always, CUDA when
present; fp32 always, bf16 where the timed code has a precision setting (on CUDA, where the GPU
supports bf16). --source times another checkout's src/ with the same command (before/after);
compare figures only within one machine and session, run back to back with nothing else heavy:
on a shared machine single runs move by tens of percent (CPU seconds are reported too).
--scale 0.05 shrinks every stage for a smoke test.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("generation", "distillation", "victim_training", "labelling", "prediction")
DISTILL_POOL, VICTIM_IMAGES, VICTIM_BATCH, LABELLED, PREDICTED = 5000, 2560, 128, 500, 10_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generator-steps", type=int, default=3, help="generator steps per timed call")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies each stage's image count (smoke tests)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {STAGES}")
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated; those present are timed")
    parser.add_argument("--precisions", default="float32,bfloat16", help="comma-separated, of float32,bfloat16")
    parser.add_argument("--source", default=str(ROOT / "src"), help="the src/ folder whose code is timed")
    parser.add_argument("--label", default="this checkout", help="names the timed code in the summary")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/speed"), help="writes OUT.json and OUT.md")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE_JSON", "AFTER_JSON"), help="only compare two results")
    return parser.parse_args()


def median_seconds(work, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median wall and process CPU seconds of `repeats` runs of `work` after a warm-up.

    CPU seconds move less than wall seconds when other processes share the cores.
    """

    def timed() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - wall, time.process_time() - cpu

    timed()  # warm-up
    runs = [timed() for _ in range(repeats)]
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def computes(device: torch.device, wanted: str):
    """Of `wanted`: fp32, and bf16 where the device has it, as resolved `Compute` values."""
    from ideal_pipeline.compute import Compute

    found = [torch.float32]
    if device.type == "cpu" or torch.cuda.is_bf16_supported(including_emulation=False):
        found.append(torch.bfloat16)
    return [Compute(device, p) for p in found if str(p).removeprefix("torch.") in wanted.split(",")]


def scaled(count: int, args: argparse.Namespace) -> int:
    return max(1, round(count * args.scale))


def uint8_pool(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=rng)
    return images, torch.randint(0, 10, (n,), generator=rng)


def result_row(stage, device, precision, work: float, seconds: tuple[float, float], unit: str, setting: str):
    """`work` units done in (wall, CPU) `seconds`: `value` is per wall second, `value_per_cpu_s` per CPU second."""
    wall, cpu = seconds
    precision_name = str(precision).removeprefix("torch.")
    return {
        "stage": stage,
        "device": device.type,
        "precision": precision_name,
        "value": work / wall,
        "value_per_cpu_s": work / cpu if cpu > 0 else None,
        "unit": unit,
        "wall_s": wall,
        "cpu_s": cpu,
        "setting": setting,
    }


def section(params: dict, name: str, **overrides):
    """A typed parameter section of conf/base (as the nodes receive it), with `overrides`."""
    from ideal_pipeline import parameter_schema

    classes = {"generator": parameter_schema.GeneratorParams, "distill": parameter_schema.DistillParams}
    return classes[name].model_validate({**params[name], **overrides})


def time_generation(device, args, params) -> list[dict]:
    from ideal_pipeline.ideal.generation import train_generator
    from ideal_pipeline.ideal.targets import balanced_targets
    from ideal_pipeline.models.classifiers import build_classifier

    settings = section(params, "generator", g_steps=args.generator_steps)
    architecture, batch = params["student"]["architecture"], params["batch_size"]
    setting = f"B {batch}, ngf {settings.ngf}, {architecture} student, channels_last {settings.channels_last}"
    rows = []
    for compute in computes(device, args.precisions):
        torch.manual_seed(0)
        student = build_classifier(architecture, 1, 10, 28)
        targets = balanced_targets(batch, 10)
        run = functools.partial(train_generator, student, targets, settings, 28, 1, 0, compute)
        seconds = median_seconds(run, args.repeats, device)
        rows.append(result_row("generation", device, compute.precision, settings.g_steps, seconds, "steps/s", setting))
    return rows


def time_distillation(device, args, params) -> list[dict]:
    from ideal_pipeline.ideal.distillation import distill
    from ideal_pipeline.models.classifiers import build_classifier

    n = scaled(DISTILL_POOL, args)
    images, labels = uint8_pool(n)
    settings = section(params, "distill", min_steps=0, epochs=1)  # one pass: samples/s of the loop itself
    setting = f"{n} images, batch {settings.batch_size}, {params['student']['architecture']} student"
    rows = []
    for compute in computes(device, args.precisions):
        student = build_classifier(params["student"]["architecture"], 1, 10, 28)
        run = functools.partial(distill, student, images, labels, settings, 0, compute)
        seconds = median_seconds(run, args.repeats, device)
        rows.append(result_row("distillation", device, compute.precision, n, seconds, "samples/s", setting))
    return rows


def time_victim_training(device, args, params) -> list[dict]:
    from ideal_pipeline.models.classifiers import build_classifier
    from ideal_pipeline.models.training import train_classifier
    from ideal_pipeline.parameter_schema import VictimParams

    n = scaled(VICTIM_IMAGES, args)
    images, labels = uint8_pool(n)
    recipe = VictimParams.model_validate({**params["victim"], "epochs": 1, "batch_size": VICTIM_BATCH})
    rows = []
    for compute in computes(device, args.precisions):
        model = build_classifier(recipe.architecture, 1, 10, 28)
        seconds = median_seconds(
            functools.partial(train_classifier, model, images, labels, recipe, compute), args.repeats, device
        )
        setting = f"{recipe.architecture}, batch {VICTIM_BATCH}, {n} images"
        rows.append(result_row("victim_training", device, compute.precision, n, seconds, "samples/s", setting))
    return rows


def time_labelling(device, args, params) -> list[dict]:
    from ideal_pipeline.models.classifiers import build_classifier
    from ideal_pipeline.models.files import save_model_file
    from ideal_pipeline.teacher.blackbox import AccountedTeacher
    from ideal_pipeline.teacher.ledger import QueryLedger
    from ideal_pipeline.teacher.local import LocalModelTeacher

    n = scaled(LABELLED, args)
    images, _ = uint8_pool(n)
    with tempfile.TemporaryDirectory() as tmp:
        example = torch.rand(2, 1, 28, 28)
        save_model_file(build_classifier("convnet", 1, 10, 28).eval(), Path(tmp) / "teacher.safetensors", example)
        teacher = LocalModelTeacher(Path(tmp) / "teacher.safetensors", device=device)  # the teacher's own device
        ledgers = iter(range(10**6))

        def label_fresh():  # a new ledger each time: every image is paid, as in a first run
            ledger = QueryLedger(Path(tmp) / f"ledger{next(ledgers)}.sqlite")
            AccountedTeacher(teacher, ledger, 10**9).label(images)

        seconds = median_seconds(label_fresh, args.repeats, device)
    setting = f"{n} images, convnet teacher (.safetensors), fresh SQLite ledger"
    return [result_row("labelling", device, torch.float32, n, seconds, "samples/s", setting)]


def time_prediction(device, args, params) -> list[dict]:
    from ideal_pipeline.models.classifiers import build_classifier
    from ideal_pipeline.models.training import predict

    n = scaled(PREDICTED, args)
    images, _ = uint8_pool(n)
    model = build_classifier(params["student"]["architecture"], 1, 10, 28)
    seconds = median_seconds(functools.partial(predict, model, images, device), args.repeats, device)
    setting = f"{n} images, {params['student']['architecture']}, batch 1000"
    return [result_row("prediction", device, torch.float32, n, seconds, "samples/s", setting)]


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in reversed(cpuinfo.splitlines()) if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    model, flags = fields.get("model name", ""), set(fields.get("flags", "").split())
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)),
        "cpu_bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16"}),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# Stage throughput: {result['label']}",
        "",
        (
            f"{m['cpu']}, {m['cpu_cores_usable']} usable cores, "
            f"bf16 instructions: {', '.join(m['cpu_bf16_flags']) or 'none'}; "
            f"GPU: {m['gpu'] or 'none'}; torch {m['torch']}; {result['threads']} torch threads; "
            f"median of {result['repeats']} runs; peak memory {result['peak_rss_mb']:.0f} MB."
        ),
        "",
        f"`{result['command']}`",
        "",
        "| stage | device | precision | throughput (wall) | per process CPU second | setting |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        figure, per_cpu = f"{r['value']:.3g} {r['unit']}", f"{r['value_per_cpu_s'] or 0:.3g}"
        lines.append(f"| {r['stage']} | {r['device']} | {r['precision']} | {figure} | {per_cpu} | {r['setting']} |")
    return "\n".join(lines) + "\n"


def row_key(r: dict) -> tuple[str, str, str]:
    return r["stage"], r["device"], r["precision"]


def comparison(before: dict, after: dict) -> str:
    """Before/after per stage, per wall second and per process CPU second (steadier on a shared machine)."""
    earlier = {row_key(r): r for r in before["rows"]}
    lines = [
        f"# Stage throughput: {before['label']} -> {after['label']}",
        "",
        (
            f"{after['machine']['cpu']}, GPU: {after['machine']['gpu'] or 'none'}, {after['threads']} torch threads "
            f"(before: {before['threads']}); median of {after['repeats']} runs each. On a shared machine one"
            " run of each moves by tens of percent: compare with a stage whose code did not change."
        ),
        "",
        "| stage | device | precision | before | after | after / before (wall) | (per CPU second) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in after["rows"]:
        old = earlier.get(row_key(r))
        was, wall_ratio, cpu_ratio = "n/a", "", ""
        if old:
            was, wall_ratio = f"{old['value']:.3g}", f"{r['value'] / old['value']:.2f}x"
            if r.get("value_per_cpu_s") and old.get("value_per_cpu_s"):
                cpu_ratio = f"{r['value_per_cpu_s'] / old['value_per_cpu_s']:.2f}x"
        now = f"{r['value']:.3g} {r['unit']}"
        cells = [r["stage"], r["device"], r["precision"], was, now, wall_ratio, cpu_ratio]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(out: str, result: dict | None, text: str) -> None:
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if result is not None:
        out_path.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out_path.with_suffix(".md").write_text(text)
    print(text)


def main() -> None:
    args = parse_args()
    if args.compare:
        before, after = (json.loads(Path(p).read_text()) for p in args.compare)
        write(args.out, None, comparison(before, after))
        return
    sys.path.insert(0, str(Path(args.source).resolve()))
    torch.set_num_threads(args.threads)
    params = yaml.safe_load((ROOT / "conf/base/parameters_ideal.yml").read_text())["ideal"]
    params["victim"] = yaml.safe_load((ROOT / "conf/base/parameters_victim.yml").read_text())["victim"]
    timers = {name: globals()[f"time_{name}"] for name in args.stages.split(",")}
    devices = [torch.device(d) for d in args.devices.split(",") if d == "cpu" or torch.cuda.is_available()]
    rows = []
    for device in devices:
        for timer in timers.values():
            for timed in timer(device, args, params):
                print(timed, flush=True)
                rows.append(timed)
    result = {
        "label": args.label,
        "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:]),
        "source": str(Path(sys.modules["ideal_pipeline"].__file__).parents[1]),
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": rows,
    }
    write(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
