"""A sweep spec (YAML) and the trials it expands to.

    name: smoke                    # experiments are named <name>-s<seed>-<hash of the overrides>
    env: test                      # optional: start from conf/test's parameters (written into conf/base)
    seeds: [0, 1, 2, 3]            # ideal.seed of each trial
    set: {ideal.rounds: 20}        # every trial
    grid:                          # every combination
      victim.architecture: [convnet, lenet]
    configurations:                # or a list of override sets, one after another (ablations)
      - {}
      - {ideal.generator.g_steps: 10}
    resources: {CPU: 1}            # per trial; {CPU: 4, GPU: 1} lands it on a worker that offers a GPU
    retries: 0                     # reruns of a trial that failed with an error (a dead worker is always retried)
    label_store: null              # a label store every worker shares (default: each worker's IDEAL_LABEL_STORE)
    copy: []                       # files of the repository, beyond git and DVC, that each trial needs

Trials = configurations x grid x seeds, each with `set`. A trial is a real `kedro run` of the default
pipeline whose parameters are conf/base's with its overrides written into the conf/base files, as
`dvc exp run -S conf/base/parameters_<section>.yml:<key>=<value>` writes them: DVC records conf/base's
parameters, so that is where a recorded run's parameters must be.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ideal_pipeline.config import flatten
from ideal_pipeline.errors import UserError

KEYS = ("name", "env", "seeds", "set", "grid", "configurations", "resources", "retries", "label_store", "copy")
SEED = "ideal.seed"
# Parameter files DVC's Hydra cannot rewrite (they hold ${globals:...} paths shared with the catalog).
NOT_SETTABLE = ("victim_api",)


class SpecError(UserError, ValueError):
    """The sweep spec cannot be run as written; the message says what to change."""


@dataclass(frozen=True)
class Trial:
    name: str  # the DVC experiment's name
    overrides: tuple[tuple[str, Any], ...]  # dotted key and value, in the order written: env's, then the spec's
    shown: dict[str, Any]  # the spec's own overrides of this trial (without the env's), for people
    digest: str

    def __hash__(self) -> int:  # the fields hold dicts and lists; the digest names them all
        return hash(self.digest)


@dataclass
class SweepSpec:
    name: str
    path: Path
    env: str | None = None
    seeds: list[int] = field(default_factory=list)
    set: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    configurations: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    resources: dict[str, float] = field(default_factory=lambda: {"CPU": 1})
    retries: int = 0
    label_store: str | None = None
    copy: list[str] = field(default_factory=list)


def _mapping(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise SpecError(f"`{key}` must be a mapping of parameter names to values, not {value!r}")
    return flatten(value)


def load_spec(path: str | Path) -> SweepSpec:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise SpecError(f"cannot read the sweep spec {path}: {error}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a sweep spec is a YAML mapping with the keys {', '.join(KEYS)}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {', '.join(unknown)}; a sweep spec has {', '.join(KEYS)}")
    name = str(raw.get("name") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,40}", name):
        raise SpecError(f"{path}: name {name!r} must be letters, digits, '-' or '_' (it names DVC experiments)")
    seeds = raw.get("seeds") or []
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SpecError(f"{path}: seeds must be a list of integers, not {seeds!r}")
    grid = _mapping(raw, "grid")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"{path}: grid.{key} must be a non-empty list of values, not {values!r}")
    configurations = raw.get("configurations") or [{}]
    if not isinstance(configurations, list) or not all(isinstance(c, dict | type(None)) for c in configurations):
        raise SpecError(f"{path}: configurations must be a list of mappings (parameter: value)")
    resources = raw.get("resources") or {"CPU": 1}
    if not isinstance(resources, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in resources.values()
    ):
        raise SpecError(f"{path}: resources must map names (CPU, GPU, ...) to amounts, not {resources!r}")
    retries = raw.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise SpecError(f"{path}: retries must be a whole number >= 0, not {retries!r}")
    return SweepSpec(
        name=name,
        path=path,
        env=raw.get("env"),
        seeds=seeds,
        set=_mapping(raw, "set"),
        grid=grid,
        configurations=[flatten(c or {}) for c in configurations],
        resources={str(k): v for k, v in resources.items() if v},
        retries=retries,
        label_store=raw.get("label_store"),
        copy=[str(p) for p in raw.get("copy") or []],
    )


def env_overrides(repo: Path, env: str | None) -> dict[str, Any]:
    """Every parameter of conf/<env>/parameters*.yml, as dotted keys (Kedro merges them key by key: "soft")."""
    if env is None:
        return {}
    folder = repo / "conf" / env
    if not folder.is_dir():
        raise SpecError(f"env {env!r}: {folder} does not exist")
    values: dict[str, Any] = {}
    for path in sorted(folder.glob("parameters*.yml")):
        values.update(flatten(yaml.safe_load(path.read_text()) or {}))
    return values


def expand(spec: SweepSpec, repo: Path) -> list[Trial]:
    """The trials of `spec`, each named by a hash of its parameters (so a restart knows which ran)."""
    base = env_overrides(repo, spec.env)
    seeds = spec.seeds or [None]
    trials: dict[str, Trial] = {}
    for configuration in spec.configurations:
        for point in itertools.product(*spec.grid.values()):
            for seed in seeds:
                own: dict[str, Any] = {}
                parts = [spec.set, configuration, dict(zip(spec.grid, point)), {} if seed is None else {SEED: seed}]
                for part in parts:
                    clash = sorted(k for k in part if k in own and own[k] != part[k])
                    if clash:
                        raise SpecError(f"{spec.path}: {', '.join(clash)} set twice with different values in a trial")
                    own.update(part)
                overrides = {**base, **own}
                digest = hashlib.sha256(json.dumps(sorted(overrides.items()), default=str).encode()).hexdigest()
                seed_part = f"-s{overrides[SEED]}" if SEED in overrides else ""
                name = f"{spec.name}{seed_part}-{digest[:8]}"
                trials.setdefault(name, Trial(name, tuple(overrides.items()), own, digest))
    return list(trials.values())


def parameter_file(conf_base: Path, key: str) -> Path:
    """conf/base/parameters_<section>.yml for `<section>.<...>`, as `dvc exp run -S` names it."""
    section = key.split(".", 1)[0]
    path = conf_base / f"parameters_{section}.yml"
    if "." not in key or section in NOT_SETTABLE or not path.is_file():
        raise SpecError(
            f"{key}: no conf/base/parameters_{section}.yml holds it; a sweep sets parameters of the files "
            "conf/base/parameters_<section>.yml as <section>.<key>"
        )
    return path


def hydra_value(value: Any) -> str:
    """A value in Hydra's override grammar (what `dvc exp run -S key=value` takes): JSON's scalars and lists."""
    if isinstance(value, dict):
        raise SpecError(f"{value!r}: a mapping inside a list cannot be set; set its keys one by one")
    return json.dumps(value)


def write_parameters(conf_base: Path, overrides: tuple[tuple[str, Any], ...]) -> None:
    """Rewrite conf/base's parameter files with `overrides`, as `dvc exp run -S` does (comments kept)."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    by_file: dict[Path, list[str]] = {}
    for key, value in overrides:
        # `++` sets a key the file does not list yet (a parameter with a default in the schema only).
        by_file.setdefault(parameter_file(conf_base, key), []).append(f"++{key}={hydra_value(value)}")
    for path, lines in by_file.items():
        try:
            apply_overrides(path, lines)
        except InvalidArgumentError as error:
            raise SpecError(f"{path.name}: cannot set {lines}: {error.__cause__ or error}") from None


def check_trials(repo: Path, trials: list[Trial]) -> None:
    """Every trial's parameters through the project's schema, before any trial starts or pays."""
    from ideal_pipeline.config import BASE_ENV, parameters_from_conf
    from ideal_pipeline.parameter_schema import ParameterError, validate_parameters

    with tempfile.TemporaryDirectory(prefix="ideal-sweep-check-") as scratch:
        for trial in trials:
            conf = Path(scratch) / trial.name / "conf"
            shutil.copytree(repo / "conf" / "base", conf / "base")
            write_parameters(conf / "base", trial.overrides)
            try:
                validate_parameters(parameters_from_conf(conf.parent, BASE_ENV))
            except ParameterError as error:
                raise SpecError(f"trial {trial.name} ({describe(trial.shown)}): {error}") from None


def describe(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the defaults"
