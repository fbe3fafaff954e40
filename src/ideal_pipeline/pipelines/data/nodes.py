"""Nodes of the `data` pipeline."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ideal_pipeline import realdata

logger = logging.getLogger(__name__)

SOURCES = ("fashion_mnist_idx", "torchvision")


def load_real_data(params: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Real train and test splits as uint8 images (N, C, H, W) and int64 labels (N,)."""
    source = params["source"]
    if source == "fashion_mnist_idx":
        train = realdata.load_idx_split(params["idx_dir"], "train")
        test = realdata.load_idx_split(params["idx_dir"], "test")
    elif source == "torchvision":
        name, root, download = params["torchvision_name"], params["torchvision_root"], params["download"]
        train = realdata.load_torchvision_split(name, root, "train", download)
        test = realdata.load_torchvision_split(name, root, "test", download)
    else:
        raise ValueError(f"unknown data.source {source!r}; choose one of {SOURCES}")
    if params.get("test_npz"):
        test = realdata.load_npz(params["test_npz"])
    train = realdata.subsample(train, params.get("train_limit"), params["seed"])
    test = realdata.subsample(test, params.get("test_limit"), params["seed"] + 1)
    logger.info("real data: %d train, %d test images of shape %s", len(train["labels"]), len(test["labels"]), tuple(train["images"].shape[1:]))
    return train, test
