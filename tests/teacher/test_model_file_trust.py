"""Model files: ours (.safetensors) load without running code; .pt/.pt2 only when trusted."""

from __future__ import annotations

import json
import pathlib
import pickle
import zipfile

import pytest
import torch

from ideal_pipeline.models.classifiers import ConvNet, LeNet
from ideal_pipeline.models.files import UntrustedModelFile, load_model_file, save_classifier_weights, save_model_file
from ideal_pipeline.teacher.connect import connect_teacher
from ideal_pipeline.teacher.local import LocalModelTeacher
from tests.conftest import settings

CARD = {"kind": "model_file", "input_shape": [1, 28, 28], "num_classes": 10}


def access(**overrides):
    return settings("ideal.teacher_access", **overrides)


class _TouchOnUnpickle:
    """Unpickling this creates `marker`: stands for any code a crafted file could run."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _rewrite_zip(path: pathlib.Path, change) -> None:
    """Rewrite every member of the zip archive at `path` through `change(name, data) -> data`."""
    with zipfile.ZipFile(path) as source:
        members = [(info, change(info.filename, source.read(info))) for info in source.infolist()]
    with zipfile.ZipFile(path, "w") as target:
        for info, data in members:
            target.writestr(info, data)


def craft_pt2(legit: pathlib.Path, out: pathlib.Path, marker: pathlib.Path) -> None:
    """A .pt2 whose first weight is declared pickled and is a pickle that touches `marker`.

    torch.export.load reads pickled weights with torch.load(weights_only=False).
    """
    out.write_bytes(legit.read_bytes())
    victim = {}

    def mark_pickled(name, data):
        if name.endswith("weights/model_weights_config.json"):
            config = json.loads(data)
            entry = next(iter(config["config"].values()))
            entry["use_pickle"] = True
            victim["file"] = entry["path_name"]
            return json.dumps(config).encode()
        return data

    _rewrite_zip(out, mark_pickled)
    _rewrite_zip(
        out,
        lambda name, data: (
            pickle.dumps(_TouchOnUnpickle(marker)) if name.endswith("weights/" + victim["file"]) else data
        ),
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model_files")
    torch.manual_seed(0)
    model = LeNet().eval()
    example = torch.rand(2, 1, 28, 28)
    for suffix in (".pt2", ".pt", ".safetensors"):
        save_model_file(model, folder / f"legit{suffix}", example)
    craft_pt2(folder / "legit.pt2", folder / "crafted.pt2", folder / "MARKER")
    return folder, model


def test_a_crafted_pt2_is_refused_without_trust_and_runs_nothing(files):
    folder, _ = files
    for load in (
        lambda: load_model_file(folder / "crafted.pt2"),
        lambda: LocalModelTeacher(folder / "crafted.pt2"),
        lambda: connect_teacher(access(model_path=str(folder / "crafted.pt2")), CARD),  # byo / teacher_access path
        lambda: connect_teacher(access(), {**CARD, "model_path": str(folder / "crafted.pt2")}),
        # The card's trust covers the card's own file, not one the parameters name.
        lambda: connect_teacher(access(model_path=str(folder / "crafted.pt2")), {**CARD, "trusted_model_file": True}),
    ):
        with pytest.raises(UntrustedModelFile) as refusal:
            load()
        assert "trusted_model_file: true" in str(refusal.value) and "--trust-model-file" in str(refusal.value)
    assert not (folder / "MARKER").exists()


def test_the_crafted_file_really_runs_code_when_trusted(files, tmp_path):
    """What the refusal protects from: the same file, trusted, executes its payload."""
    folder, _ = files
    craft_pt2(folder / "legit.pt2", tmp_path / "crafted.pt2", tmp_path / "MARKER")
    with pytest.raises(ValueError):  # the payload is not a tensor, so the load fails, after running it
        load_model_file(tmp_path / "crafted.pt2", trusted=True)
    assert (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("suffix", [".pt2", ".pt"])
def test_third_party_formats_load_when_trusted(files, suffix):
    folder, model = files
    with pytest.raises(UntrustedModelFile, match="pickle"):
        load_model_file(folder / f"legit{suffix}")
    images = torch.rand(5, 1, 28, 28)
    assert torch.allclose(load_model_file(folder / f"legit{suffix}", trusted=True)(images), model(images), atol=1e-5)
    teacher = connect_teacher(access(model_path=str(folder / f"legit{suffix}"), trusted_model_file=True), CARD)
    assert torch.equal(teacher.label(images), model(images).argmax(1))


def test_our_safetensors_files_load_without_pickle_or_trust(files, monkeypatch):
    folder, model = files

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    images = torch.rand(5, 1, 28, 28)
    assert torch.allclose(load_model_file(folder / "legit.safetensors")(images), model(images), atol=1e-6)


def test_weights_are_rebuilt_from_the_architecture_in_their_metadata(tmp_path):
    model = ConvNet(channels=3, num_classes=4, image_size=16).eval()
    save_classifier_weights(model, tmp_path / "c.safetensors", "convnet", (3, 16, 16), 4)
    loaded = load_model_file(tmp_path / "c.safetensors")
    images = torch.rand(2, 3, 16, 16)
    assert isinstance(loaded, ConvNet) and torch.allclose(loaded(images), model(images))
    save_classifier_weights(model, tmp_path / "wrong.safetensors", "lenet", (3, 16, 16), 4)
    with pytest.raises(ValueError, match="do not fit a lenet"):
        load_model_file(tmp_path / "wrong.safetensors")
    save_classifier_weights(model, tmp_path / "unknown.safetensors", "resnet", (3, 16, 16), 4)
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        load_model_file(tmp_path / "unknown.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a classifier of this project"):
        load_model_file(tmp_path / "plain.safetensors")
