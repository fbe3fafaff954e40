"""Same parameters, same results: tiny fp32 CPU runs of the training loops, pinned.

Two checks:
- against values recorded from commit a5517da's code (the loops before the device-resident
  engine), torch 2.14.1, 1 thread, on an Intel Xeon (torch CPU capability AVX512): losses within
  a tight tolerance on any machine, and the digests of weights, images and predictions bitwise
  where torch and its CPU kernel level are the recording's (other kernels round differently);
- bitwise against tests/ideal/legacy_engine.py (that commit's loops, verbatim) on any machine.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from ideal_pipeline.ideal.distillation import DistillSettings, distill, predict
from ideal_pipeline.ideal.generation import GeneratorSettings, crop_padding, generate_images, quantize, train_generator
from ideal_pipeline.ideal.targets import balanced_targets
from ideal_pipeline.models.classifiers import ConvNet, LeNet
from ideal_pipeline.models.training import train_classifier
from tests.ideal import legacy_engine

CPU = torch.device("cpu")
RECORDING_KERNELS = ("2.14.1", "AVX512")

GENERATOR_CASES = {
    "channels_last": GeneratorSettings(nz=16, ngf=8, g_steps=5, channels_last=True, entropy_form="batch_balance"),
    "contiguous": GeneratorSettings(nz=16, ngf=8, g_steps=5, channels_last=False, entropy_form="batch_balance"),
    "no_augment": GeneratorSettings(nz=16, ngf=8, g_steps=5, augment=False, entropy_form="per_sample_sum"),
}

# Recorded from commit a5517da's code (see the module docstring).
RECORDED_GENERATOR = {
    "channels_last": {
        "losses": [-9.208612442016602, -9.20550537109375, -9.210494041442871, -9.203155517578125, -9.20556640625],
        "best_step": 2,
        "state": "9b0e17d2a439e629",
        "images": "d99cec129386162c",
    },
    "contiguous": {
        "losses": [-9.208611488342285, -9.20550537109375, -9.210493087768555, -9.203155517578125, -9.20556640625],
        "best_step": 2,
        "state": "fcf253d2b0f4f23f",
        "images": "d99cec129386162c",
    },
    "no_augment": {
        "losses": [-9.204872131347656, -9.211074829101562, -9.217220306396484, -9.224050521850586, -9.23190689086914],
        "best_step": 4,
        "state": "d5758e9eb758c6e9",
        "images": "62b2d9dafcc45b20",
    },
}
RECORDED_DISTILL = {
    "losses": [3.7965472766331265, 6.339070865086147],
    "state": "318ac44af6094f09",
    "predictions": "51c0ad895364299e",
}
RECORDED_VICTIM = {
    "losses": [3.1049726690564836, 3.1141001769474577],
    "state": "d695be24b47f45d7",
    "predictions": "480ee6d3aded621d",
}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def digest(tensors: dict[str, torch.Tensor]) -> str:
    sha = hashlib.sha256()
    for key in sorted(tensors):
        sha.update(key.encode())
        sha.update(tensors[key].detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()[:16]


def same_kernels_as_recording() -> bool:
    return (torch.__version__.split("+")[0], torch.backends.cpu.get_cpu_capability()) == RECORDING_KERNELS


def pool():
    rng = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (70, 1, 28, 28), dtype=torch.uint8, generator=rng)
    return images, torch.randint(0, 10, (70,), generator=rng)


def seeded(cls, seed):
    torch.manual_seed(seed)
    return cls()


def run_generator(settings):
    result = train_generator(seeded(LeNet, 1), balanced_targets(20, 10), settings, 28, 1, seed=7, device=CPU)
    images = quantize(generate_images(result.state_dict, result.noise, settings, 28, 1, CPU))
    return {
        "losses": result.losses,
        "best_step": result.best_step,
        "state": digest(result.state_dict),
        "images": digest({"i": images}),
    }


def run_distill():
    images, labels = pool()
    student = seeded(LeNet, 2)
    losses = distill(student, images, labels, DistillSettings(batch_size=20, epochs=2), seed=5, device=CPU)
    predictions = predict(student, images, CPU, batch_size=32)
    return {"losses": losses, "state": digest(student.state_dict()), "predictions": digest({"p": predictions})}


def run_victim():
    images, labels = pool()
    model = seeded(ConvNet, 4)
    losses = train_classifier(
        model, images, labels, epochs=2, batch_size=16, lr=0.003, weight_decay=1e-4, seed=6, device=CPU
    )
    predictions = predict(model, images, CPU, batch_size=32)
    return {"losses": losses, "state": digest(model.state_dict()), "predictions": digest({"p": predictions})}


def assert_matches_recording(run: dict, recorded: dict) -> None:
    assert run["losses"] == pytest.approx(recorded["losses"], rel=1e-5)
    if "best_step" in recorded:
        assert run["best_step"] == recorded["best_step"]
    if same_kernels_as_recording():
        assert run == recorded, "bitwise difference from commit a5517da's results on the recording's kernels"


@pytest.mark.parametrize("case", sorted(GENERATOR_CASES))
def test_generator_matches_the_recorded_run(case):
    assert_matches_recording(run_generator(GENERATOR_CASES[case]), RECORDED_GENERATOR[case])


def test_distillation_matches_the_recorded_run():
    assert_matches_recording(run_distill(), RECORDED_DISTILL)


def test_victim_training_matches_the_recorded_run():
    assert_matches_recording(run_victim(), RECORDED_VICTIM)


@pytest.mark.parametrize("case", sorted(GENERATOR_CASES))
def test_generator_is_bitwise_the_old_loop(case):
    settings = GENERATOR_CASES[case]
    new = train_generator(seeded(LeNet, 1), balanced_targets(20, 10), settings, 28, 1, seed=7, device=CPU)
    old_state, old_noise, old_losses, old_best = legacy_engine.train_generator(
        seeded(LeNet, 1), balanced_targets(20, 10), settings, 28, 1, 7, CPU, crop_padding(settings.crop_padding, 28)
    )
    assert (new.losses, new.best_step) == (old_losses, old_best)
    assert torch.equal(new.noise, old_noise)
    assert digest(new.state_dict) == digest(old_state)


def test_distillation_and_prediction_are_bitwise_the_old_loops():
    images, labels = pool()
    new, old = seeded(LeNet, 2), seeded(LeNet, 2)
    settings = DistillSettings(batch_size=20, epochs=2)
    new_losses = distill(new, images, labels, settings, seed=5, device=CPU)
    assert new_losses == legacy_engine.distill(old, images, labels, settings, 5, CPU)
    assert digest(new.state_dict()) == digest(old.state_dict())
    assert torch.equal(predict(new, images, CPU, batch_size=32), legacy_engine.predict(old, images, CPU, batch_size=32))


def test_victim_training_is_bitwise_the_old_loop():
    images, labels = pool()
    new, old = seeded(ConvNet, 4), seeded(ConvNet, 4)
    args = (images, labels, 2, 16, 0.003, 1e-4, 6, CPU)
    assert train_classifier(new, *args) == legacy_engine.train_classifier(old, *args)
    assert digest(new.state_dict()) == digest(old.state_dict())
