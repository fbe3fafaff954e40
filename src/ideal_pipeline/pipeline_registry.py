"""Project pipelines, shaped by the run's parameters.

The rounds are Kedro nodes, so `ideal.rounds` shapes the graph; so do `baselines.methods`
(which baselines run) and `ideal.generator.reinitialize` (whether a round reads the previous
generator). `hooks.PipelineShapeHook` hands the run's parameters (environment and `--params`
included) over before Kedro builds the pipelines; without a run (e.g. `kedro registry list`)
they are read from `conf/` through the project's own config loader settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.pipeline import Pipeline

from ideal_pipeline.pipelines.baselines import pipeline as baselines
from ideal_pipeline.pipelines.data import pipeline as data
from ideal_pipeline.pipelines.evaluate import pipeline as evaluate
from ideal_pipeline.pipelines.external_teacher import pipeline as external_teacher
from ideal_pipeline.pipelines.ideal import pipeline as ideal
from ideal_pipeline.pipelines.redistill import pipeline as redistill
from ideal_pipeline.pipelines.victim import pipeline as victim

# The stages of the default run, in order; dvc.yaml has one stage per name.
DEFAULT_PIPELINES = ("data", "victim", "ideal", "baselines", "redistill", "evaluate")


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


_shape: PipelineShape | None = None


def use_parameters(params: dict[str, Any]) -> bool:
    """Shape the pipelines after these parameters; True when that changes the shape."""
    global _shape
    shape = PipelineShape.from_parameters(params)
    changed = shape != _shape
    _shape = shape
    return changed


def parameters_from_conf(project_path: Path | None = None, env: str | None = None) -> dict[str, Any]:
    """The parameters as `kedro run` would read them, through the project's config loader settings."""
    from kedro.framework.project import settings

    loader = settings.CONFIG_LOADER_CLASS(
        conf_source=str((project_path or Path.cwd()) / settings.CONF_SOURCE),
        env=env or os.environ.get("KEDRO_ENV"),
        **settings.CONFIG_LOADER_ARGS,
    )
    return loader["parameters"]


def register_pipelines() -> dict[str, Pipeline]:
    shape = _shape or PipelineShape.from_parameters(parameters_from_conf())
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
    registered["external_teacher"] = external_teacher.create_pipeline()
    registered["byo"] = Pipeline(
        [registered[name] for name in ("data", "external_teacher", "ideal", "baselines", "redistill", "evaluate")]
    )
    return registered
