"""Project pipelines, shaped by the run's parameters.

The rounds are Kedro nodes, so `ideal.rounds` shapes the graph; so do `baselines.methods`
(which baselines run) and `ideal.generator.reinitialize` (whether a round reads the previous
generator). `hooks.PipelineShapeHook` hands the run's parameters (environment and `--params`
included) over before Kedro builds the pipelines; without a run (e.g. `kedro registry list`)
they are read from `conf/` through the project's own config loader settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kedro.pipeline import Pipeline, pipeline

from ideal_pipeline.config import parameters_from_conf
from ideal_pipeline.pipelines.baselines import pipeline as baselines
from ideal_pipeline.pipelines.data import pipeline as data
from ideal_pipeline.pipelines.evaluate import pipeline as evaluate
from ideal_pipeline.pipelines.external_teacher import pipeline as external_teacher
from ideal_pipeline.pipelines.ideal import pipeline as ideal
from ideal_pipeline.pipelines.redistill import pipeline as redistill
from ideal_pipeline.pipelines.victim import pipeline as victim

# The stages of the default run, in order; dvc.yaml has one stage per name.
DEFAULT_PIPELINES = ("data", "victim", "ideal", "baselines", "redistill", "evaluate")
# The victim's artifacts that describe the teacher, and what a byo run writes in their place.
BYO_TEACHER_ARTIFACTS = {
    name: f"external_teacher_{name.removeprefix('teacher_')}"
    for name in ("teacher_api", "teacher_test_predictions", "teacher_metrics")
}


@dataclass(frozen=True)
class PipelineShape:
    rounds: int
    reinitialize: bool
    methods: tuple[str, ...]

    @classmethod
    def from_parameters(cls, params: dict[str, Any]) -> PipelineShape:
        return cls(
            rounds=int(params["ideal"]["rounds"]),
            reinitialize=bool(params["ideal"]["generator"]["reinitialize"]),
            methods=baselines.method_list(params.get("baselines", {}).get("methods")),
        )


class RunShape:
    """The shape the next `register_pipelines` builds: set by `hooks.PipelineShapeHook` from the run's
    parameters (environment and `--params` included), read from conf/ when no run has set it."""

    def __init__(self):
        self.shape: PipelineShape | None = None

    def use(self, params: dict[str, Any]) -> bool:
        """Shape the pipelines after these parameters; True when that changes the shape."""
        shape = PipelineShape.from_parameters(params)
        changed, self.shape = shape != self.shape, shape
        return changed

    def current(self) -> PipelineShape:
        return self.shape or PipelineShape.from_parameters(parameters_from_conf())

    def forget(self) -> None:
        self.shape = None


# Kedro's `register_pipelines()` takes no arguments: the run's shape reaches it through this object.
RUN_SHAPE = RunShape()


def register_pipelines() -> dict[str, Pipeline]:
    shape = RUN_SHAPE.current()
    registered = {
        "data": data.create_pipeline(),
        "victim": victim.create_pipeline(),
        "ideal": ideal.create_pipeline(rounds=shape.rounds, reinitialize=shape.reinitialize),
        "baselines": baselines.create_pipeline(rounds=shape.rounds, methods=shape.methods),
        "redistill": redistill.create_pipeline(rounds=shape.rounds),
        "evaluate": evaluate.create_pipeline(rounds=shape.rounds),
    }
    registered["__default__"] = Pipeline([registered[name] for name in DEFAULT_PIPELINES])
    # Bring your own teacher: the same run with a teacher we did not train in place of our victim.
    # What describes that teacher has its own artifacts: a byo run never writes into the victim's.
    registered["external_teacher"] = pipeline(external_teacher.create_pipeline(), outputs=BYO_TEACHER_ARTIFACTS)
    byo = Pipeline([registered[name] for name in ("data", "ideal", "baselines", "redistill", "evaluate")])
    registered["byo"] = Pipeline(
        [
            registered["external_teacher"],
            pipeline(byo, inputs={k: v for k, v in BYO_TEACHER_ARTIFACTS.items() if k in byo.inputs()}),
        ]
    )
    return registered
