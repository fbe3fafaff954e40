"""Kedro datasets of this project, and the real-data readers."""

import gzip
import struct

import numpy as np
import pytest
import torch
from kedro.io import DatasetError

from ideal_pipeline import realdata
from ideal_pipeline.datasets import ClassifierWeightsDataset, TensorDataset
from ideal_pipeline.models.classifiers import ConvNet
from ideal_pipeline.parameter_schema import ParameterError, validate_parameters
from tests.conftest import RAW, base_parameters


def test_tensor_dataset_round_trips_a_tensor_and_a_dict(tmp_path):
    single = TensorDataset(str(tmp_path / "a.safetensors"))
    images = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)
    single.save(images)
    assert torch.equal(single.load(), images)
    named = TensorDataset(str(tmp_path / "deep/b.safetensors"))
    named.save({"noise": torch.randn(2, 3), "targets": torch.arange(2)})
    loaded = named.load()
    assert set(loaded) == {"noise", "targets"} and loaded["targets"].dtype == torch.int64


def test_a_failed_save_leaves_the_previous_artifact_intact(tmp_path):
    dataset = TensorDataset(str(tmp_path / "a.safetensors"))
    dataset.save(torch.arange(4))
    with pytest.raises(DatasetError, match="expected a tensor"):
        dataset.save({"x": "not a tensor"})
    assert torch.equal(dataset.load(), torch.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]


def test_the_victims_file_is_safetensors_weights_with_their_architecture(tmp_path):
    from safetensors import safe_open

    torch.manual_seed(0)
    model = ConvNet().eval()
    x = torch.rand(5, 1, 28, 28)
    dataset = ClassifierWeightsDataset(str(tmp_path / "teacher.safetensors"))
    dataset.save((model, x[:2]))
    with safe_open(str(tmp_path / "teacher.safetensors"), "pt") as f:
        metadata = f.metadata()
    assert (metadata["architecture"], metadata["input_shape"], metadata["num_classes"]) == ("convnet", "1,28,28", "10")
    assert torch.allclose(dataset.load()(x), model(x), atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["teacher.safetensors"]
    with pytest.raises(DatasetError, match="must end in .safetensors"):
        ClassifierWeightsDataset(str(tmp_path / "teacher.pt2"))


def test_fashion_mnist_idx_files_are_read_as_uint8_nchw():
    test = realdata.load_idx_split(RAW, "test")
    assert test["images"].shape == (10000, 1, 28, 28) and test["images"].dtype == torch.uint8
    assert test["labels"].dtype == torch.int64 and set(test["labels"].tolist()) == set(range(10))


def test_a_truncated_idx_file_is_a_clear_error(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", 10, 28, 28) + b"\x00" * 100)
    with pytest.raises(ValueError, match="truncated"):
        realdata.read_idx(path)


def test_missing_idx_files_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="make setup"):
        realdata.load_idx_split(tmp_path, "train")


def test_user_npz_test_sets(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, x=np.random.rand(4, 3, 32, 32).astype(np.float32), y=np.arange(4))
    loaded = realdata.load_npz(good)
    assert loaded["images"].dtype == torch.uint8 and loaded["images"].shape == (4, 3, 32, 32)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.full((2, 1, 8, 8), np.nan, dtype=np.float32), y=np.arange(2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        realdata.load_npz(bad)
    np.savez(tmp_path / "noy.npz", x=np.zeros((2, 1, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="lacks"):
        realdata.load_npz(tmp_path / "noy.npz")


def test_unknown_torchvision_dataset_lists_the_supported_ones():
    params = base_parameters()
    params["data"]["torchvision_name"] = "ImageNet"
    with pytest.raises(ParameterError, match="data.torchvision_name.*CIFAR10"):
        validate_parameters(params)


def test_subsample_is_seeded():
    split = {"images": torch.arange(100).view(100, 1, 1, 1), "labels": torch.arange(100)}
    a, b = realdata.subsample(split, 10, seed=1), realdata.subsample(split, 10, seed=1)
    assert torch.equal(a["labels"], b["labels"]) and len(a["labels"]) == 10
    assert torch.equal(a["images"].flatten(), a["labels"])
