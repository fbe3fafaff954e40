"""What a sweep prints: trials done / running / failed / queued with an ETA while it runs, a summary at the end."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ideal_pipeline.sweep.spec import Trial, describe


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass
class SweepProgress:
    name: str
    trials: list[Trial]
    already_done: set[str]  # finished before this invocation (skipped)
    started: float = field(default_factory=time.monotonic)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)  # trial: when this driver saw it start

    @property
    def to_run(self) -> int:
        return len(self.trials) - len(self.already_done)

    @property
    def queued(self) -> int:
        return self.to_run - len(self.results) - len(self.errors) - len(self.running)

    def set_running(self, names: set[str]) -> bool:
        """The trials running now; whether that changed."""
        now = time.monotonic()
        running = {name: self.running.get(name, now) for name in names}
        changed = running.keys() != self.running.keys()
        self.running = running
        return changed

    def eta_s(self) -> float | None:
        """What is left at the mean time of the trials finished so far, spread over as many trials at once as
        run now: rough, and None until a trial has finished."""
        seconds = [r["seconds"] for r in self.results.values() if r.get("seconds")]
        if not seconds:
            return None
        mean, now = sum(seconds) / len(seconds), time.monotonic()
        left = max(0, self.queued) * mean + sum(max(0.0, mean - (now - t)) for t in self.running.values())
        return left / max(1, len(self.running))

    def line(self) -> str:
        eta = self.eta_s()
        left = self.queued + len(self.running)
        when = "" if not left else (", ETA after the first trial" if eta is None else f", ETA {duration(eta)}")
        return (
            f"[{time.strftime('%H:%M:%S')}] sweep {self.name}: {len(self.results)}/{self.to_run} done, "
            f"{len(self.running)} running, {len(self.errors)} failed, {max(0, self.queued)} queued; "
            f"elapsed {duration(time.monotonic() - self.started)}{when}"
        )

    def summary(self) -> str:
        rows = [("trial", "overrides", "status", "test acc.", "queries", "attempt", "time", "where / error")]
        for trial in self.trials:
            result = self.results.get(trial.name)
            overrides = describe(trial.shown)
            if trial.name in self.already_done and result is None:
                rows.append((trial.name, overrides, "done before", "", "", "", "", ""))
            elif result is not None:
                metrics = result.get("run", {}).get("metrics", {})
                accuracy = metrics.get("student_accuracy")
                rows.append(
                    (
                        trial.name,
                        overrides,
                        "done",
                        "" if accuracy is None else f"{100 * accuracy:.1f}%",
                        str(metrics.get("queries_used", "")),
                        str(result.get("attempt", "")),
                        duration(result.get("seconds", 0)),
                        f"{result.get('host')} {result.get('worker')}",
                    )
                )
            else:
                error = self.errors.get(trial.name, "not run")
                rows.append((trial.name, overrides, "FAILED", "", "", "", "", error.strip().splitlines()[0][:160]))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        table = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        totals = (
            f"sweep {self.name}: {len(self.results)} done, {len(self.errors)} failed, "
            f"{len(self.already_done)} done before, in {duration(time.monotonic() - self.started)}"
        )
        failures = [f"\n{name} failed:\n{error}" for name, error in self.errors.items()]
        return "\n".join([*table, "", totals, *failures])
