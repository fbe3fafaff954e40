"""The baselines' image sources, and their metrics collected for `dvc metrics show`.

Each baseline runs IDEAL's own rounds (`ideal_pipeline.rounds`) with another source of images:
noise, an untrained generator, or real training images (the upper bound). Every source makes as
many samples per round as IDEAL labels.
"""

from __future__ import annotations

from typing import Any

import torch

from ideal_pipeline.models.generator import Generator
from ideal_pipeline.models.images import quantize
from ideal_pipeline.models.students import input_shape
from ideal_pipeline.parameter_schema import GeneratorParams
from ideal_pipeline.rounds.nodes import Split, Summary, generator_artifact, next_round, round_seed, samples_per_round


def initialize_generator(
    previous_summary: Summary, teacher_api: dict[str, Any], settings: GeneratorParams, batch_size: int, seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """IDEAL's generator freshly initialised and never trained (what training adds)."""
    round_index = next_round(previous_summary)
    channels, size, _ = input_shape(teacher_api)
    with torch.random.fork_rng(devices=[]):  # Generator() initialises from the global RNG
        torch.manual_seed(round_seed(seed, round_index))
        state = Generator(settings.nz, settings.ngf, size, channels).state_dict()
    noise = torch.randn(batch_size, settings.nz, generator=torch.Generator().manual_seed(round_seed(seed, round_index)))
    log = {"round": round_index, "targets": None}
    return generator_artifact(state, noise, torch.zeros(batch_size, dtype=torch.int64)), log


def _noise_images(kind: str, teacher_api, previous_summary, batch_size, label_mirrors, seed):
    round_index = next_round(previous_summary)
    rng = torch.Generator().manual_seed(round_seed(seed, round_index))
    shape = (samples_per_round(batch_size, label_mirrors), *input_shape(teacher_api))
    if kind == "uniform":
        pixels = torch.rand(shape, generator=rng)
    else:  # centred in the pixel range, wide enough to reach both ends; quantize clips to [0, 1]
        pixels = 0.5 + 0.25 * torch.randn(shape, generator=rng)
    return quantize(pixels), {"round": round_index, "targets": None}


def draw_uniform_noise(teacher_api, previous_summary, batch_size, label_mirrors, seed):
    """U(0, 1) pixels."""
    return _noise_images("uniform", teacher_api, previous_summary, batch_size, label_mirrors, seed)


def draw_gaussian_noise(teacher_api, previous_summary, batch_size, label_mirrors, seed):
    """N(0.5, 0.25^2) pixels clipped to [0, 1]."""
    return _noise_images("gaussian", teacher_api, previous_summary, batch_size, label_mirrors, seed)


def sample_real_images(
    real_train: Split,
    previous_summary: Summary,
    batch_size: int,
    label_mirrors: bool,
    seed: int,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The upper bound: real training images in a seeded order.

    Past the end of the set they repeat; the ledger labels a repeat for free, so the queries
    paid then stop at the set's size (reported, not hidden).
    """
    round_index = next_round(previous_summary)
    count, per_round = len(real_train["labels"]), samples_per_round(batch_size, label_mirrors)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    positions = torch.arange((round_index - 1) * per_round, round_index * per_round) % count
    return real_train["images"][order[positions]], {"round": round_index, "targets": None}


def collect_baselines(*metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """{method: metrics} for `dvc metrics show`, and the index of the methods the artifacts' and
    the paid labels' folders hold."""
    by_method = {m["method"]: m for m in metrics}
    return by_method, {"methods": list(by_method)}, {"methods": list(by_method)}
