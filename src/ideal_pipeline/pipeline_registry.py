"""Project pipelines."""

from __future__ import annotations

from pathlib import Path

from kedro.pipeline import Pipeline

from ideal_pipeline.pipelines.data import pipeline as data
from ideal_pipeline.pipelines.evaluate import pipeline as evaluate
from ideal_pipeline.pipelines.external_teacher import pipeline as external_teacher
from ideal_pipeline.pipelines.ideal import pipeline as ideal
from ideal_pipeline.pipelines.redistill import pipeline as redistill
from ideal_pipeline.pipelines.teacher import pipeline as teacher

_rounds: int | None = None


def set_rounds(rounds: int) -> None:
    if rounds < 1:
        raise ValueError(f"ideal.rounds must be >= 1, got {rounds}")
    global _rounds
    _rounds = rounds


def configured_rounds() -> int | None:
    return _rounds


def _rounds_from_config() -> int:
    """Round count from conf/ when no run context set it (e.g. `kedro registry list`)."""
    import os

    from kedro.config import OmegaConfigLoader

    loader = OmegaConfigLoader(
        conf_source=str(Path.cwd() / "conf"), base_env="base",
        default_run_env=os.environ.get("KEDRO_ENV", "local"),
        merge_strategy={"parameters": "soft"},
    )
    return int(loader["parameters"]["ideal"]["rounds"])


def register_pipelines() -> dict[str, Pipeline]:
    rounds = _rounds or _rounds_from_config()
    registered = {
        "data": data.create_pipeline(),
        "teacher": teacher.create_pipeline(),
        "ideal": ideal.create_pipeline(rounds=rounds),
        "redistill": redistill.create_pipeline(rounds=rounds),
        "evaluate": evaluate.create_pipeline(rounds=rounds),
    }
    registered["__default__"] = Pipeline(list(registered.values()))
    # Bring your own teacher: the same run with a teacher we did not train in place of ours.
    registered["external_teacher"] = external_teacher.create_pipeline()
    registered["byo"] = Pipeline(
        [registered["data"], registered["external_teacher"], registered["ideal"], registered["redistill"], registered["evaluate"]]
    )
    return registered
