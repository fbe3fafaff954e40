"""Tabulate GPU sweep summaries (benchmarks/results/gpu_sweep_*.jsonl) into a Markdown file.

    python benchmarks/summarize_sweeps.py   # writes benchmarks/results/gpu_sweeps.md
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]


def main() -> None:
    lines = [
        "# IDEAL variants at 50,000 queries on Fashion-MNIST (GPU sweeps)",
        "",
        "Produced by `benchmarks/gpu_sweep.sh` (SWEEP=variants | seeds | coverage) on one H100, each variant",
        "a separate process running the pipeline's node functions (`benchmarks/ideal_sweep.py`). Each sweep",
        "trained its own teacher (ConvNet, ~92.1%). Accuracy is the *final* student's, never a best-on-test pick.",
        "Rarest class: the class the teacher gave least often among the 50,000 labels, per seed.",
        "The `variants` and `seeds` sweeps ran with the defaults of the time (g_steps 10); `g20` is today's default.",
        "",
    ]
    for path in sorted(RESULTS.glob("gpu_sweep_*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        groups = defaultdict(list)
        for row in rows:
            groups[row["name"].rsplit("_s", 1)[0] if row["name"].rsplit("_s", 1)[-1].isdigit() else row["name"]].append(row)
        lines += [f"## {path.stem} (teacher {100 * rows[0]['teacher_accuracy']:.1f}%)", ""]
        lines += ["| variant | overrides | seeds | final student % | re-distilled % (fine-tune, lr 0.01) | rarest class (labels) |", "|---|---|---|---|---|---|"]
        for name, group in groups.items():
            accuracies = [100 * r["final_student_accuracy"] for r in group]
            redistilled = [100 * r["redistilled"]["final_student_lr0.01"] for r in group]
            spread = lambda values: f"{statistics.mean(values):.1f}" + (f" ± {statistics.stdev(values):.1f} ({', '.join(f'{v:.1f}' for v in values)})" if len(values) > 1 else "")  # noqa: E731
            rarest = [f"{CLASSES[min(range(10), key=r['class_counts'].__getitem__)]} {min(r['class_counts'])}" for r in group]
            overrides = " ".join(o for o in group[0]["overrides"] if not o.startswith(("num_threads", "seed=")))
            lines.append(f"| {name} | `{overrides or 'g_steps=10 (defaults of the time)'}` | {len(group)} | {spread(accuracies)} | {spread(redistilled)} | {'; '.join(rarest)} |")
        lines.append("")
    (RESULTS / "gpu_sweeps.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
