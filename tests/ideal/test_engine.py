"""The device-resident engine: no per-step host reads, on-device best-batch tracking, bf16."""

from __future__ import annotations

import functools
import math
import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

from ideal_pipeline.compute import CPU, Compute
from ideal_pipeline.ideal import generation
from ideal_pipeline.ideal.distillation import distill
from ideal_pipeline.ideal.generation import BestSnapshot, first_best_step, generate_images, train_generator
from ideal_pipeline.ideal.targets import balanced_targets
from ideal_pipeline.models.classifiers import ConvNet, LeNet
from ideal_pipeline.models.images import quantize
from ideal_pipeline.models.training import predict, train_classifier
from tests.conftest import settings

BF16 = Compute(CPU.device, torch.bfloat16)
HOST_READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__"}


class CountHostReads(TorchFunctionMode):
    """Counts the tensor calls that would wait for an accelerator (a value read on the host).

    Reads inside torch.optim are left out: a non-capturable optimiser keeps its step counters on
    the host even for CUDA weights, so reading them waits for nothing.
    """

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        self.reads += getattr(func, "__name__", "") in HOST_READS and not caller.startswith("torch.optim")
        return func(*args, **(kwargs or {}))


def host_reads(work) -> int:
    with CountHostReads() as counter:
        work()
    return counter.reads


def pool(n):
    rng = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=rng)
    return images, torch.randint(0, 10, (n,), generator=rng)


def seeded(cls, seed=0):
    torch.manual_seed(seed)
    return cls()


class DeviceSnapshot(BestSnapshot):
    """The accelerator's path (compare and copy on the device), taken on the CPU."""

    def __init__(self, module, device):
        super().__init__(module, device)
        self.on_host = False


def test_distillation_reads_the_device_once_per_epoch_not_per_batch():
    images, labels = pool(120)
    plain = settings("ideal.distill", batch_size=10, epochs=2, min_steps=0, keep_optimizer=False)
    few = host_reads(lambda: distill(LeNet(), images[:20], labels[:20], plain, 0, CPU))
    many = host_reads(lambda: distill(LeNet(), images, labels, plain, 0, CPU))
    assert few == many <= 2


def test_victim_training_reads_the_device_once_per_epoch_not_per_batch():
    images, labels = pool(120)
    recipe = settings("victim", epochs=2, batch_size=10, lr=0.003, weight_decay=1e-4, seed=0)
    few = host_reads(lambda: train_classifier(ConvNet(), images[:20], labels[:20], recipe, CPU))
    many = host_reads(lambda: train_classifier(ConvNet(), images, labels, recipe, CPU))
    assert few == many <= 2


def test_prediction_reads_nothing_per_batch():
    images, _ = pool(120)
    model = LeNet()
    assert host_reads(lambda: predict(model, images[:20], CPU.device, batch_size=10)) == host_reads(
        lambda: predict(model, images, CPU.device, batch_size=10)
    )


def test_generator_steps_read_the_device_once_per_call(monkeypatch):
    monkeypatch.setattr(generation, "BestSnapshot", DeviceSnapshot)
    reads = {}
    for steps in (2, 6):
        generator = settings("ideal.generator", nz=16, ngf=8, g_steps=steps)
        run = functools.partial(train_generator, LeNet(), balanced_targets(20, 10), generator, 28, 1, 0, CPU)
        reads[steps] = host_reads(run)
    assert reads[2] == reads[6]


@pytest.mark.parametrize("steps", [2, 6])
def test_the_device_path_keeps_the_same_generator_as_the_host_path(monkeypatch, steps):
    generator = settings("ideal.generator", nz=16, ngf=8, g_steps=steps)
    host = train_generator(seeded(LeNet, 1), balanced_targets(20, 10), generator, 28, 1, seed=4, compute=CPU)
    monkeypatch.setattr(generation, "BestSnapshot", DeviceSnapshot)
    device = train_generator(seeded(LeNet, 1), balanced_targets(20, 10), generator, 28, 1, seed=4, compute=CPU)
    assert (device.losses, device.best_step) == (host.losses, host.best_step)
    for key, value in host.state_dict.items():
        assert torch.equal(device.state_dict[key], value), key


@pytest.mark.parametrize("snapshot", [BestSnapshot, DeviceSnapshot])
def test_the_snapshot_keeps_the_first_lowest_loss_and_ignores_nan(snapshot):
    module = torch.nn.Linear(2, 1)
    keeper = snapshot(module, CPU.device)
    offered = [3.0, float("nan"), 1.0, 1.0, 2.0, float("inf")]
    for step, loss in enumerate(offered):
        with torch.no_grad():
            module.bias.fill_(step)
        keeper.offer(torch.tensor(loss))
    assert keeper.state["bias"].item() == 2.0  # the first 1.0
    assert first_best_step(offered) == 2


def test_a_generator_whose_loss_is_never_finite_is_a_clear_error():
    generator = settings("ideal.generator", nz=16, ngf=8, g_steps=2)
    generator = generator.model_copy(update={"entropy_weight": float("nan")})  # past the schema, as a bug would be
    with pytest.raises(ValueError, match="never finite"):
        train_generator(LeNet(), balanced_targets(20, 10), generator, 28, 1, seed=0, compute=CPU)


def relative_gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / max(abs(y), 1e-6) for x, y in zip(a, b))


def test_bf16_generator_runs_close_to_fp32_and_stores_uint8_images():
    generator = settings("ideal.generator", nz=16, ngf=8, g_steps=3)
    runs = {}
    for compute in (CPU, BF16):
        student, targets = seeded(LeNet, 1), balanced_targets(20, 10)
        result = train_generator(student, targets, generator, 28, 1, 2, compute)
        images = quantize(generate_images(result.state_dict, result.noise, generator, 28, 1, compute))
        runs[compute.precision] = result, images
    (fp32, fp32_images), (bf16, bf16_images) = runs[torch.float32], runs[torch.bfloat16]
    assert all(math.isfinite(v) for v in bf16.losses)
    assert relative_gap(bf16.losses, fp32.losses) < 0.01
    assert bf16_images.dtype == torch.uint8 and bf16_images.shape == fp32_images.shape
    assert (bf16_images.float() - fp32_images.float()).abs().mean() < 3  # of 255 levels
    assert all(v.dtype == fp32.state_dict[k].dtype for k, v in bf16.state_dict.items())


def test_bf16_distillation_and_victim_training_run_close_to_fp32():
    images, labels = pool(60)
    plain = settings("ideal.distill", batch_size=20, epochs=3, min_steps=0, keep_optimizer=False)
    recipe = settings("victim", epochs=2, batch_size=20, lr=0.003, weight_decay=1e-4, seed=0)
    computes = {"fp32": CPU, "bf16": BF16}
    distilled = {p: distill(seeded(LeNet), images, labels, plain, 0, computes[p]) for p in computes}
    trained = {p: train_classifier(seeded(ConvNet), images, labels, recipe, computes[p]) for p in computes}
    for losses in (distilled, trained):
        assert all(math.isfinite(v) for v in losses["bf16"])
        assert relative_gap(losses["bf16"], losses["fp32"]) < 0.05
