"""Nodes of the `victim` pipeline: the model owner's side."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ideal_pipeline.compute import CPU, resolve_compute
from ideal_pipeline.models.classifiers import build_classifier
from ideal_pipeline.models.training import predict, train_classifier
from ideal_pipeline.parameter_schema import ComputeParams, VictimApiParams, VictimParams
from ideal_pipeline.progress import duration_left

logger = logging.getLogger(__name__)


class EpochLog:
    """One log line per epoch of a long training, with the time left: a log file has no progress bar."""

    def __init__(self, epochs: int, images: int, started: float):
        self.epochs, self.images, self.started, self.seen = epochs, images, started, 0
        self.total = epochs * images

    def __call__(self, batch: int) -> None:
        before, self.seen = self.seen // self.images, self.seen + batch
        done = self.seen // self.images
        if done > before:
            elapsed = time.perf_counter() - self.started
            left = elapsed / self.seen * (self.total - self.seen)
            logger.info("victim epoch %d/%d | %.0f s | %s", done, self.epochs, elapsed, duration_left(left))


def train_victim_teacher(
    real_train: dict[str, torch.Tensor], params: VictimParams, compute: ComputeParams
) -> tuple[tuple[nn.Module, torch.Tensor], dict]:
    """Train the victim on real data; returns (model, example input), saved as safetensors weights + architecture.

    `victim.precision`, not `compute.precision`: the victim stands for someone else's model, which
    must not change with the hardware it is trained on (fp32 unless bf16 is asked for).
    """
    resolved = replace(
        resolve_compute(compute), precision=torch.bfloat16 if params.precision == "bf16" else torch.float32
    )
    images, labels = real_train["images"], real_train["labels"]
    channels, size = images.shape[1], images.shape[2]
    torch.manual_seed(params.seed)  # the initial weights too: not whatever earlier nodes left in the global RNG
    model = build_classifier(params.architecture, channels, params.num_classes, size)
    started = time.perf_counter()
    epochs = EpochLog(params.epochs, len(images), started)
    with tqdm(
        total=epochs.total, desc="victim training", unit="img", disable=None, mininterval=2.0, leave=False
    ) as bar:

        def progress(batch: int) -> None:
            bar.update(batch)
            epochs(batch)

        losses = train_classifier(model, images, labels, params, resolved, progress=progress)
    seconds = time.perf_counter() - started
    logger.info("victim teacher trained: %d epochs in %.0f s, final loss %.4f", params.epochs, seconds, losses[-1])
    example = images[:2].float().div(255.0)
    return (model.cpu().eval(), example), {"epoch_losses": losses, "seconds": seconds}


def evaluate_victim_teacher(
    victim_teacher: nn.Module, real_test: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The owner's own test predictions and accuracy of the served model file."""
    predictions = predict(victim_teacher, real_test["images"], CPU.device)
    accuracy = (predictions == real_test["labels"]).float().mean().item()
    logger.info("victim teacher test accuracy: %.2f%%", 100 * accuracy)
    return predictions, {"teacher_accuracy": accuracy, "test_samples": len(predictions)}


def publish_teacher_api(
    victim_teacher: nn.Module,
    real_test: dict[str, torch.Tensor],
    params: VictimParams,
    api_params: VictimApiParams,
    source_classes: dict[str, list[str] | None],
) -> dict[str, Any]:
    """What the owner tells API users: input shape, classes, and where to send images.

    The classes are named by `victim.class_names` when set, else by the data source (`source_classes`).
    """
    channels, height, width = real_test["images"].shape[1:]
    with torch.inference_mode():
        victim_teacher(torch.zeros(1, channels, height, width))  # the published shape must work
    return {
        "kind": "model_file",
        "model_path": api_params.published_model_path,
        "input_shape": [int(channels), int(height), int(width)],
        "num_classes": params.num_classes,
        "class_names": list(params.class_names or source_classes["class_names"] or range(params.num_classes)),
    }
