"""Generator, student, targets, entropy terms and augmentation of the IDEAL core."""

import pytest
import torch

from ideal_pipeline.compute import resolve_compute
from ideal_pipeline.ideal.generation import generate_images, train_generator
from ideal_pipeline.ideal.losses import entropy_term, generator_loss, same_class_similarity
from ideal_pipeline.ideal.targets import balanced_targets, round_targets, steered_targets
from ideal_pipeline.models.classifiers import build_classifier
from ideal_pipeline.models.generator import Generator
from ideal_pipeline.models.images import crop_padding, random_crop_flip
from ideal_pipeline.parameter_schema import ParameterError, validate_parameters
from tests.conftest import base_parameters, settings


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3)])
def test_generator_output_shape_and_range(size, channels):
    generator = Generator(nz=16, ngf=8, image_size=size, channels=channels)
    images = generator(torch.randn(6, 16))
    assert images.shape == (6, channels, size, size)
    assert images.min() >= 0 and images.max() <= 1


def test_generator_initialisation_follows_the_paper():
    generator = Generator(nz=256, ngf=64)
    conv = generator.body[2]
    batch_norm = generator.body[3]
    assert abs(conv.weight.std().item() - 0.02) < 0.002
    assert abs(batch_norm.weight.mean().item() - 1.0) < 0.01
    assert torch.all(generator.stem[0].bias == 0)


def test_generator_rejects_sizes_it_cannot_upsample_to():
    with pytest.raises(ValueError, match="divisible by 4"):
        Generator(image_size=30)


@pytest.mark.parametrize("architecture", ["lenet", "convnet"])
@pytest.mark.parametrize("size,channels,classes", [(28, 1, 10), (32, 3, 100)])
def test_classifier_shapes(architecture, size, channels, classes):
    model = build_classifier(architecture, channels, classes, size)
    assert model(torch.rand(4, channels, size, size)).shape == (4, classes)


def test_unknown_architecture_names_the_known_ones():
    with pytest.raises(ValueError, match="convnet"):
        build_classifier("resnet9000", 1, 10, 28)


def test_balanced_targets_use_every_class_equally():
    targets = balanced_targets(250, 10)
    assert torch.equal(torch.bincount(targets), torch.full((10,), 25))


def test_balanced_targets_need_a_batch_divisible_by_the_classes():
    with pytest.raises(ValueError, match="divisible"):
        balanced_targets(25, 10)


def test_steered_targets_favour_classes_the_teacher_rarely_gives():
    counts = [1000, 1000, 0, 1000, 1000, 1000, 1000, 10, 1000, 1000]
    allotted = torch.bincount(steered_targets(250, counts, cap=None), minlength=10)
    assert allotted.sum() == 250
    assert allotted[2] > allotted[7] > allotted[0]
    capped = torch.bincount(steered_targets(250, counts), minlength=10)
    assert capped[2] == capped[7] == 75 and capped[0] > allotted[0]


def test_steered_targets_without_counts_are_balanced():
    assert torch.equal(torch.bincount(steered_targets(250, [0] * 10)), torch.full((10,), 25))


def test_unknown_target_sampling_is_a_clear_error():
    params = base_parameters()
    params["ideal"]["generator"]["target_sampling"] = "random"
    with pytest.raises(ParameterError, match="ideal.generator.target_sampling.*balanced"):
        validate_parameters(params)


def test_round_targets_follow_the_sampling_setting():
    counts = [100] * 9 + [0]
    balanced = round_targets(settings("ideal.generator", target_sampling="balanced"), 20, counts)
    steered = round_targets(settings("ideal.generator", target_sampling="steered"), 20, counts)
    assert torch.equal(balanced, balanced_targets(20, 10)) and (steered == 9).sum() > 2


def test_per_sample_entropy_is_lowest_for_uncertain_samples():
    confident = torch.tensor([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
    uncertain = torch.zeros(2, 3)
    assert entropy_term(uncertain, "per_sample") < entropy_term(confident, "per_sample")
    # The reference code's (p * log p).mean(): over samples and classes, so -log(3) / 3 for 3 classes.
    assert entropy_term(uncertain, "per_sample").item() == pytest.approx(-torch.log(torch.tensor(3.0)).item() / 3)
    assert entropy_term(uncertain, "per_sample_sum").item() == pytest.approx(-torch.log(torch.tensor(3.0)).item())
    logits = torch.randn(7, 10)
    assert entropy_term(logits, "per_sample_sum").item() == pytest.approx(
        10 * entropy_term(logits, "per_sample").item()
    )


def test_batch_balance_entropy_rewards_using_all_classes():
    one_class = torch.tensor([[10.0, 0.0, 0.0]] * 3)
    all_classes = torch.eye(3) * 10
    # Every sample confident, but on different classes: balanced batch, low loss.
    assert entropy_term(all_classes, "batch_balance") < entropy_term(one_class, "batch_balance")
    # The per-sample form cannot tell these two batches apart.
    assert entropy_term(all_classes, "per_sample").item() == pytest.approx(entropy_term(one_class, "per_sample").item())


def test_entropy_form_is_validated():
    params = base_parameters()
    params["ideal"]["generator"]["entropy_form"] = "gini"
    with pytest.raises(ParameterError, match="entropy_form.*per_sample"):
        validate_parameters(params)


def test_generator_loss_adds_weighted_entropy_to_cross_entropy():
    logits = torch.randn(8, 10)
    targets = torch.randint(0, 10, (8,))
    with_entropy = generator_loss(logits, targets, 5.0, "per_sample")
    without = generator_loss(logits, targets, 0.0, "per_sample")
    assert with_entropy.item() == pytest.approx(
        without.item() + 5.0 * entropy_term(logits, "per_sample").item(), rel=1e-5
    )


def test_same_class_similarity_compares_only_images_asked_for_one_class():
    images = torch.rand(4, 1, 8, 8)
    copies = torch.cat([images[:2], images[:2]])
    # rows 0 and 2 are one image, asked for class 0 both times; rows 1 and 3 likewise for class 1
    assert same_class_similarity(copies, torch.tensor([0, 1, 0, 1])).item() == pytest.approx(1.0, abs=1e-5)
    assert same_class_similarity(images, torch.tensor([0, 1, 2, 3])).item() == 0.0  # no class asked twice
    opposite = torch.stack([images[0], 1 - images[0]])  # mirror images around the batch mean
    assert same_class_similarity(opposite, torch.tensor([5, 5])).item() == pytest.approx(-1.0, abs=1e-5)


def test_a_diversity_weight_makes_a_class_s_images_less_alike():
    torch.manual_seed(0)
    student = build_classifier("lenet", 1, 10, 28)
    targets = torch.arange(10).repeat(4)
    resolved = resolve_compute(settings("compute", device="cpu", num_threads=0, precision="fp32"))
    similarity = {}
    for weight in (0.0, 5.0):
        generator = settings("ideal.generator", nz=16, ngf=8, g_steps=8, channels_last=False, diversity_weight=weight)
        result = train_generator(student, targets, generator, 28, 1, 0, resolved)
        images = generate_images(result.state_dict, result.noise, generator, 28, 1, resolved)
        similarity[weight] = same_class_similarity(images, targets).item()
    assert similarity[5.0] < similarity[0.0] - 0.05


def test_crop_flip_keeps_shape_and_passes_gradients():
    images = torch.rand(5, 1, 28, 28, requires_grad=True)
    views = random_crop_flip(images, generator=torch.Generator().manual_seed(0))
    assert views.shape == images.shape
    views.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_crop_flip_without_padding_only_flips():
    images = torch.rand(64, 1, 4, 4)
    views = random_crop_flip(images, padding=0, generator=torch.Generator().manual_seed(1))
    for original, view in zip(images, views):
        assert torch.equal(view, original) or torch.equal(view, original.flip(-1))


def test_crop_padding_scales_with_the_image_unless_given():
    assert [crop_padding("auto", size) for size in (8, 28, 32)] == [1, 4, 4]
    assert crop_padding(2, 28) == 2
    for bad in (-1, "four", 1.5, True):
        params = base_parameters()
        params["ideal"]["generator"]["crop_padding"] = bad
        with pytest.raises(ParameterError, match="crop_padding"):
            validate_parameters(params)


def test_a_class_without_labels_gets_at_most_its_capped_share():
    counts = [3000] * 8 + [0, 0]
    allotted = torch.bincount(steered_targets(250, counts), minlength=10)
    assert allotted.sum() == 250
    assert allotted[8] == allotted[9] == 75  # 3 x the balanced 25, not most of the batch
    assert allotted[:8].min() >= 12
    earlier_rule = torch.bincount(steered_targets(250, counts, prior=1, cap=None), minlength=10)
    assert earlier_rule[8] + earlier_rule[9] > 240  # what the cap prevents


def test_the_prior_smooths_the_allotment():
    counts = [0, 100] + [1000] * 8
    smooth = torch.bincount(steered_targets(250, counts, cap=None), minlength=10)
    sharp = torch.bincount(steered_targets(250, counts, prior=1, cap=None), minlength=10)
    assert smooth[0] < sharp[0] and smooth[1] > sharp[1]
