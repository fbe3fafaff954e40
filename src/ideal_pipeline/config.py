"""The project's configuration: its loader, and where each Kedro environment keeps its data.

The default run (no `--env`, or `--env local`) writes under `data/`, the folders DVC tracks. Any
other environment (`--env test`, `--env cifar10`, ...) writes under `data/envs/<env>/`, so a quick
try or another data set never overwrites the default run's tracked results. The catalog names
paths as `${data_root:}/06_models/...`; raw data (`data/01_raw`) is shared by every environment.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf

from ideal_pipeline.errors import UserError

DATA = Path("data")
BASE_ENV = "base"
DEFAULT_RUN_ENV = "local"


def data_root(env: str | None) -> Path:
    """`data` for the default run, `data/envs/<env>` for any other environment."""
    return DATA if env in (None, DEFAULT_RUN_ENV, BASE_ENV) else DATA / "envs" / env


class ProjectConfigLoader(OmegaConfigLoader):
    """Kedro's OmegaConfigLoader with `${data_root:}` resolving to this loader's environment's data folder."""

    def __getitem__(self, key: str) -> dict[str, Any]:
        # Registered at each read: another loader of the same process (another environment) may have
        # registered its own root since this one was created.
        root = str(data_root(self.env))
        OmegaConf.register_new_resolver("data_root", lambda: root, replace=True)
        return super().__getitem__(key)


LOADER_ARGS = {
    "base_env": BASE_ENV,
    "default_run_env": DEFAULT_RUN_ENV,
    # "soft" merges an environment's parameters key by key into base instead of replacing whole sections.
    "merge_strategy": {"parameters": "soft"},
}


# Kedro's loader registers its `globals` resolver process-wide while it is being built, so two loaders
# built at once in one process (a sweep worker runs its trials in threads) can resolve `${globals:...}`
# through the other, half-built one: one loader at a time, from construction to resolved parameters.
_ONE_LOADER_AT_A_TIME = threading.Lock()


def parameters_from_conf(
    project_path: Path | None = None, env: str | None = None, runtime_params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The parameters as `kedro run --env ENV --params ...` reads them (`base` alone: only conf/base)."""
    with _ONE_LOADER_AT_A_TIME:
        loader = ProjectConfigLoader(
            conf_source=str((project_path or Path.cwd()) / "conf"),
            env=env or os.environ.get("KEDRO_ENV"),
            runtime_params=runtime_params,
            **LOADER_ARGS,
        )
        return loader["parameters"]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as dotted names: `{"ideal": {"rounds": 2}}` -> `{"ideal.rounds": 2}` (lists are values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(params: dict[str, Any], base: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the parameters whose values differ between `params` and `base`."""
    names = []
    for key in sorted(set(params) | set(base)):
        mine, theirs = params.get(key), base.get(key)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            names += differences(mine, theirs, f"{prefix}{key}.")
        elif mine != theirs:
            names.append(f"{prefix}{key}")
    return names


class UnrecordableRun(UserError, RuntimeError):
    """DVC would record conf/base's parameters beside outputs made with others."""


def check_recordable(project_path: Path, env: str | None, params: dict[str, Any]) -> None:
    """Refuse a run that DVC would record wrongly: dvc.yaml names conf/base's parameters and `data/`'s outputs."""
    changed = differences(params, parameters_from_conf(project_path, BASE_ENV))
    if data_root(env) != DATA or changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        reasons = ([f"environment {env!r} writes under {data_root(env)}"] if data_root(env) != DATA else []) + (
            [f"these parameters differ from conf/base: {shown} (from conf/{env or DEFAULT_RUN_ENV} or --params)"]
            if changed
            else []
        )
        raise UnrecordableRun(
            "DVC records conf/base's parameters and data/'s outputs, but " + "; ".join(reasons) + ". "
            "Run other settings as DVC experiments (`dvc exp run -S conf/base/parameters_ideal.yml:ideal.seed=1`), "
            "or with `kedro run --env ...` outside DVC."
        )
