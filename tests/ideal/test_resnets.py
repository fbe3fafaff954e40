"""CIFAR-style ResNets as victims and students, the victim's CIFAR-10 training options, and the
generator and augmentation at 32x32x3."""

from __future__ import annotations

import pytest
import torch

from ideal_pipeline.compute import CPU, Compute
from ideal_pipeline.datasets import ClassifierWeightsDataset
from ideal_pipeline.ideal.generation import train_generator
from ideal_pipeline.ideal.targets import balanced_targets
from ideal_pipeline.models.classifiers import ARCHITECTURES, build_classifier
from ideal_pipeline.models.generator import Generator
from ideal_pipeline.models.images import crop_padding
from ideal_pipeline.models.training import train_classifier
from ideal_pipeline.parameter_schema import ParameterError, validate_parameters
from tests.conftest import base_parameters, settings

RESNETS = ("resnet8", "resnet20", "resnet18", "resnet34")
# Parameters at 3 channels and 10 classes: He et al.'s ResNet-20 has 0.27M, the reference ResNet-18 11.2M.
PARAMETERS = {"resnet8": (0.07e6, 0.09e6), "resnet20": (0.26e6, 0.28e6), "resnet18": (11.1e6, 11.3e6)}
PARAMETERS["resnet34"] = (21.2e6, 21.4e6)


def built(name: str, channels: int = 3, size: int = 32, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_classifier(name, channels, 10, size)


@pytest.mark.parametrize("name", RESNETS)
def test_resnets_are_registered_and_count_the_expected_parameters(name):
    model = built(name)
    assert type(model) is ARCHITECTURES[name]
    low, high = PARAMETERS[name]
    assert low <= sum(p.numel() for p in model.parameters()) <= high


@pytest.mark.parametrize("name", RESNETS)
@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_resnets_map_images_to_one_logit_per_class(name, channels, size):
    model = built(name, channels, size).eval()
    with torch.inference_mode():
        assert model(torch.rand(2, channels, size, size)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet8", "resnet20", "resnet18"])
def test_forward_and_backward_on_a_tiny_batch_reach_every_parameter(name):
    model = built(name).train()
    loss = torch.nn.functional.cross_entropy(model(torch.rand(4, 3, 32, 32)), torch.arange(4))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet8", "resnet20"])
def test_channels_last_gives_the_same_logits_and_trains(name):
    model = built(name).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-5)
    model.train()
    model(x.contiguous(memory_format=torch.channels_last)).sum().backward()
    assert model.conv1.weight.grad is not None


def test_a_resnet_victim_is_saved_and_loaded_by_its_architecture_name(tmp_path):
    model = built("resnet20").eval()
    x = torch.rand(4, 3, 32, 32)
    dataset = ClassifierWeightsDataset(str(tmp_path / "teacher.safetensors"))
    dataset.save((model, x[:2]))
    assert torch.allclose(dataset.load()(x), model(x), atol=1e-5)


def cifar_like(n: int = 48):
    rng = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=rng), torch.arange(n) % 10


CIFAR_RECIPE = {"optimizer": "sgd", "label_smoothing": 0.1, "augment": True, "channels_last": True}
BF16 = Compute(CPU.device, torch.bfloat16)


def recipe(**overrides):
    return settings(
        "victim", **{"epochs": 2, "batch_size": 16, "lr": 0.05, "weight_decay": 5e-4, "seed": 3, **overrides}
    )


def test_the_cifar_recipe_trains_reproducibly_and_hands_back_a_default_format_model():
    images, labels = cifar_like()
    runs = []
    for _ in range(2):
        model = built("resnet8")
        losses = train_classifier(model, images, labels, recipe(**CIFAR_RECIPE), BF16)
        runs.append((losses, model.state_dict()))
        assert all(torch.isfinite(torch.tensor(losses)))
        assert model.conv1.weight.is_contiguous()  # back in the default memory format
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(v, runs[1][1][k]) for k, v in runs[0][1].items())


def test_augmentation_changes_the_inputs_but_not_the_batch_order():
    labels = torch.arange(48) % 10
    images = (torch.arange(48, dtype=torch.uint8) * 5 + 10).view(48, 1, 1, 1).expand(48, 3, 32, 32).contiguous()
    seen = {}
    for augment in (False, True):
        model = built("resnet8")
        batches = []
        model.register_forward_pre_hook(lambda _, args, out=batches: out.append(args[0].clone()))
        train_classifier(model, images, labels, recipe(epochs=1, weight_decay=0.0, augment=augment), CPU)
        seen[augment] = batches
    plain, augmented = seen[False], seen[True]
    assert len(plain) == len(augmented) == 3
    assert not torch.equal(plain[0], augmented[0])
    # Each image is one grey level: crops add zero borders and flips move pixels, neither swaps images.
    for before, after in zip(plain, augmented, strict=True):
        assert torch.equal(before.amax((1, 2, 3)), after.amax((1, 2, 3)))
        assert (after == 0).any()


def test_victim_parameters_default_to_the_fashion_mnist_recipe_and_check_the_new_options():
    defaults = settings("victim")
    assert (defaults.optimizer, defaults.label_smoothing, defaults.augment) == ("adamw", 0.0, False)
    assert (defaults.channels_last, defaults.precision) == (False, "fp32")
    for bad in ({"optimizer": "adam"}, {"label_smoothing": 1.0}, {"precision": "auto"}):
        params = base_parameters()
        params["victim"].update(bad)
        with pytest.raises(ParameterError, match=f"victim.{next(iter(bad))}"):
            validate_parameters(params)


def test_the_generator_makes_32x32_colour_images_and_the_crop_pads_by_4():
    torch.manual_seed(0)
    generator = Generator(nz=256, ngf=64, image_size=32, channels=3)
    images = generator(torch.randn(5, 256))
    assert images.shape == (5, 3, 32, 32)
    assert 0 <= images.min() and images.max() <= 1
    assert crop_padding("auto", 32) == 4 and crop_padding("auto", 28) == 4


def test_a_generator_round_runs_at_32x32x3_against_a_resnet_student():
    student = built("resnet8")
    tiny = settings("ideal.generator", nz=16, ngf=8, g_steps=2)
    result = train_generator(student, balanced_targets(20, 10), tiny, 32, 3, seed=7, compute=CPU)
    generator = Generator(16, 8, 32, 3)
    generator.load_state_dict(result.state_dict)
    assert generator(result.noise).shape == (20, 3, 32, 32) and len(result.losses) == 2
