"""The `ideal` pipeline's generator node: fresh or continued generator, by parameter."""

import copy
from pathlib import Path

import torch
import yaml

from ideal_pipeline.pipelines.ideal import nodes
from ideal_pipeline.pipelines.ideal.pipeline import create_pipeline

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"

API = {"input_shape": [1, 28, 28], "num_classes": 10}


def tiny_params(**generator):
    params = yaml.safe_load((CONF / "parameters_ideal.yml").read_text())["ideal"]
    params.update(rounds=2, batch_size=20, device="cpu")
    params["generator"].update(nz=16, ngf=8, g_steps=1, channels_last=False, **generator)
    return params


def generator_weights(artifact):
    """Weights only: BatchNorm's running statistics move with every training-mode forward pass."""
    return {k: v for k, v in artifact.items() if k.startswith("state.") and "running" not in k and "num_batches" not in k}


def two_rounds_of_generators(params):
    student, summary = nodes.initialize_student(API, params)
    first, _ = nodes.train_round_generator(student, summary, API, params)
    second, _ = nodes.train_round_generator(student, {**summary, "round": 1}, API, params, copy.deepcopy(first))
    alone, _ = nodes.train_round_generator(student, {**summary, "round": 1}, API, params)
    return first, second, alone


def test_a_reinitialised_generator_ignores_the_previous_rounds():
    first, second, alone = two_rounds_of_generators(tiny_params(reinitialize=True))
    assert all(torch.equal(v, alone[k]) for k, v in second.items())
    assert not torch.equal(second["state.body.2.weight"], first["state.body.2.weight"])


def test_a_continued_generator_starts_from_the_previous_rounds():
    first, second, _ = two_rounds_of_generators(tiny_params(reinitialize=False))
    # One step keeps the batch scored before any update, i.e. the starting weights.
    assert all(torch.equal(v, first[k]) for k, v in generator_weights(second).items())
    assert not torch.equal(second["noise"], first["noise"])  # new noise each round


def test_each_round_after_the_first_can_read_the_previous_generator():
    pipeline = create_pipeline(rounds=3)
    generator_nodes = {n.name: n for n in pipeline.nodes if n.name.endswith("train_generator")}
    assert "round_001.generator" not in generator_nodes["round_001.train_generator"].inputs
    assert "round_001.generator" in generator_nodes["round_002.train_generator"].inputs
    assert "round_002.generator" in generator_nodes["round_003.train_generator"].inputs
