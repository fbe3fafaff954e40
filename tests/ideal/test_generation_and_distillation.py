"""One IDEAL round's two stages on tiny settings."""

import torch

from ideal_pipeline.compute import CPU
from ideal_pipeline.ideal.distillation import distill
from ideal_pipeline.ideal.generation import generate_images, train_generator
from ideal_pipeline.ideal.targets import balanced_targets
from ideal_pipeline.models.classifiers import LeNet
from ideal_pipeline.models.images import quantize, to_float
from ideal_pipeline.models.training import predict
from tests.conftest import plain_distill, settings

SETTINGS = settings("ideal.generator", nz=16, ngf=8, g_steps=4, channels_last=False)


def test_train_generator_keeps_the_lowest_loss_batch_and_its_inputs():
    result = train_generator(LeNet(), balanced_targets(20, 10), SETTINGS, 28, 1, seed=0, compute=CPU)
    assert len(result.losses) == 4
    assert result.losses[result.best_step] == min(result.losses)
    assert result.noise.shape == (20, 16)
    assert torch.equal(result.targets, balanced_targets(20, 10))


def test_training_the_generator_leaves_the_student_unchanged():
    student = LeNet()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    train_generator(student, balanced_targets(20, 10), SETTINGS, 28, 1, seed=0, compute=CPU)
    for key, value in student.state_dict().items():
        assert torch.equal(value, before[key]), key


def seeded_student(seed=0):
    torch.manual_seed(seed)
    return LeNet()


def test_same_seed_same_generator():
    a = train_generator(seeded_student(), balanced_targets(20, 10), SETTINGS, 28, 1, seed=3, compute=CPU)
    b = train_generator(seeded_student(), balanced_targets(20, 10), SETTINGS, 28, 1, seed=3, compute=CPU)
    for key in a.state_dict:
        assert torch.equal(a.state_dict[key], b.state_dict[key])


def test_materialised_images_are_deterministic_uint8():
    result = train_generator(LeNet(), balanced_targets(20, 10), SETTINGS, 28, 1, seed=0, compute=CPU)
    first = quantize(generate_images(result.state_dict, result.noise, SETTINGS, 28, 1, CPU))
    second = quantize(generate_images(result.state_dict, result.noise, SETTINGS, 28, 1, CPU))
    assert first.dtype == torch.uint8 and first.shape == (20, 1, 28, 28)
    assert torch.equal(first, second)


def test_quantize_round_trips_stored_images_exactly():
    stored = torch.randint(0, 256, (10, 1, 5, 5), dtype=torch.uint8)
    assert torch.equal(quantize(to_float(stored)), stored)


def test_distillation_fits_the_labels_it_is_given():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (60,))
    student = LeNet()
    losses = distill(student, images, labels, plain_distill(batch_size=20, lr=0.05, epochs=30), seed=0, compute=CPU)
    assert losses[-1] < losses[0] / 4
    assert (predict(student, images, CPU.device) == labels).float().mean() > 0.9


def test_distillation_refuses_mismatched_images_and_labels():
    import pytest

    with pytest.raises(ValueError, match="labels"):
        distill(
            LeNet(),
            torch.zeros(3, 1, 28, 28, dtype=torch.uint8),
            torch.zeros(2, dtype=torch.int64),
            plain_distill(),
            0,
            CPU,
        )


def test_a_continued_generator_starts_from_the_given_weights():
    earlier = train_generator(LeNet(), balanced_targets(20, 10), SETTINGS, 28, 1, seed=0, compute=CPU)
    one_step = settings("ideal.generator", nz=16, ngf=8, g_steps=1, channels_last=False)
    # With one step the kept batch is the one scored before any update: the starting weights
    # (BatchNorm's running statistics have moved with that forward pass; the output does not use them).
    continued = train_generator(
        LeNet(), balanced_targets(20, 10), one_step, 28, 1, seed=5, compute=CPU, initial_state=earlier.state_dict
    )
    fresh = train_generator(LeNet(), balanced_targets(20, 10), one_step, 28, 1, seed=5, compute=CPU)
    for key, value in earlier.state_dict.items():
        if "running" not in key and "num_batches" not in key:
            assert torch.equal(continued.state_dict[key], value), key
    assert not torch.equal(fresh.state_dict["body.2.weight"], earlier.state_dict["body.2.weight"])


def test_min_steps_adds_passes_over_a_small_pool_and_the_last_one_is_partial():
    images = torch.randint(0, 256, (100, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (100,))
    seen = []
    losses = distill(
        LeNet(), images, labels, plain_distill(batch_size=25, min_steps=10), seed=0, compute=CPU, progress=seen.append
    )
    assert len(seen) == 10 and sum(seen) == 250
    assert len(losses) == 3


def test_min_steps_below_one_pass_changes_nothing():
    images = torch.randint(0, 256, (100, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (100,))
    students = [seeded_student(), seeded_student()]
    for student, min_steps in zip(students, (0, 3)):
        distill(student, images, labels, plain_distill(batch_size=25, min_steps=min_steps), seed=0, compute=CPU)
    for key, value in students[0].state_dict().items():
        assert torch.equal(value, students[1].state_dict()[key]), key
