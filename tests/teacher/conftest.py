"""Fixtures of the teacher tests."""

import pytest
import torch

from ideal_pipeline.models.classifiers import LeNet
from ideal_pipeline.models.files import save_model_file


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A LeNet as a TorchScript file: a third-party model format (loaded only when trusted)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "lenet.pt"
    save_model_file(LeNet(), path, torch.rand(2, 1, 28, 28))
    return path
