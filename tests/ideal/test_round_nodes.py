"""The round nodes: fresh or continued generator, seeds, and the pool read once."""

import copy

import pytest
import torch

from ideal_pipeline.datasets import LabelledPoolDataset, TensorDataset, labelled_pool_dataset
from ideal_pipeline.pipelines.baselines.pipeline import image_source as baseline_source
from ideal_pipeline.pipelines.ideal import nodes
from ideal_pipeline.pipelines.ideal.pipeline import create_pipeline
from ideal_pipeline.rounds.nodes import initialize_student, materialize_synthetic
from ideal_pipeline.rounds.pipeline import create_method_pipeline
from tests.conftest import settings

API = {"input_shape": [1, 28, 28], "num_classes": 10}
COMPUTE = settings("compute", device="cpu", num_threads=0, precision="fp32")


def tiny_params(**generator):
    # candidates from the first round on unless a test asks otherwise: the round tests start at round 1
    generator = {"candidates_from_round": 1, **generator}
    return {
        "generator": settings("ideal.generator", nz=16, ngf=8, g_steps=1, channels_last=False, **generator),
        "student": settings("ideal.student"),
        "batch_size": 20,
        "seed": 0,
    }


def generator_weights(artifact):
    """Weights only: BatchNorm's running statistics move with every training-mode forward pass."""
    return {
        k: v for k, v in artifact.items() if k.startswith("state.") and "running" not in k and "num_batches" not in k
    }


def first_round(params):
    """A fresh student, its summary before round 1, and `train_generator`'s other arguments."""
    plan = {"method": "ideal", "budget_scope": "ideal/seed=0/run=test/", "planned_queries": 80}
    student, summary = initialize_student(plan, API, params["student"], params["seed"])
    return (
        student,
        summary,
        (API, params["generator"], params["student"], params["batch_size"], params["seed"], COMPUTE),
    )


def two_rounds_of_generators(params):
    student, summary, args = first_round(params)
    first, _ = nodes.train_generator(student, summary, *args)
    second, _ = nodes.train_generator(student, {**summary, "round": 1}, *args, copy.deepcopy(first))
    alone, _ = nodes.train_generator(student, {**summary, "round": 1}, *args)
    return first, second, alone


def test_a_reinitialised_generator_ignores_the_previous_rounds():
    first, _, alone = two_rounds_of_generators(tiny_params(reinitialize=True))
    assert not torch.equal(alone["state.body.2.weight"], first["state.body.2.weight"])


def test_a_continued_generator_starts_from_the_previous_rounds():
    first, second, _ = two_rounds_of_generators(tiny_params(reinitialize=False))
    # One step keeps the batch scored before any update, i.e. the starting weights.
    assert all(torch.equal(v, first[k]) for k, v in generator_weights(second).items())
    assert not torch.equal(second["noise"], first["noise"])  # new noise each round


def test_the_previous_generator_is_read_only_when_it_is_continued():
    continued = {n.name: n for n in create_pipeline(rounds=3, reinitialize=False).nodes}
    # (a round reads `ideal.round_NNN.generator`; `params:ideal.generator` is its settings)
    assert "ideal.round_001.generator" in continued["ideal.round_002.train_generator"].inputs
    assert "ideal.round_002.generator" in continued["ideal.round_003.train_generator"].inputs
    fresh = create_pipeline(rounds=3, reinitialize=True)
    trainers = [n for n in fresh.nodes if n.name.endswith("train_generator")]
    assert len(trainers) == 3 and not [
        n for n in trainers if any(i.startswith("ideal.round_") and i.endswith(".generator") for i in n.inputs)
    ]


def test_ideal_has_no_edge_from_real_data_and_the_real_data_baseline_has_one():
    real = {"real_train", "real_validation", "real_test"}
    assert not real & create_pipeline(rounds=3).inputs()
    assert "real_train" in create_method_pipeline("real_data", 2, baseline_source("real_data")).inputs()
    assert not real & create_method_pipeline("uniform_noise", 2, baseline_source("uniform_noise")).inputs()


def test_the_pool_reads_each_rounds_files_once_per_process(tmp_path, monkeypatch):
    for r in (1, 2, 3):
        TensorDataset(str(tmp_path / f"round_{r:03d}/synthetic_images.safetensors")).save(
            torch.full((4, 1, 2, 2), r, dtype=torch.uint8)
        )
        TensorDataset(str(tmp_path / f"round_{r:03d}/teacher_labels.safetensors")).save(torch.full((4,), r))
    reads = []
    original = labelled_pool_dataset.load_file
    monkeypatch.setattr(labelled_pool_dataset, "load_file", lambda path: reads.append(path) or original(path))
    pool = LabelledPoolDataset(str(tmp_path)).load()
    for rounds in (1, 2, 3):
        images, labels = pool.load(rounds)
        assert len(images) == len(labels) == 4 * rounds
        assert labels.tolist() == [r for r in range(1, rounds + 1) for _ in range(4)]
    assert len(reads) == 6  # three rounds, two files each, each read once
    TensorDataset(str(tmp_path / "round_002/teacher_labels.safetensors")).save(torch.full((4,), 9))
    assert pool.load(3)[1][4:8].tolist() == [9] * 4  # a rewritten file is read again


def test_the_least_sure_images_are_chosen_with_each_predicted_class_in_turn():
    from ideal_pipeline.ideal.selection import least_sure_by_class

    probabilities = torch.tensor(
        [[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.7, 0.3, 0.0], [0.5, 0.4, 0.1], [0.2, 0.8, 0.0], [0.1, 0.1, 0.8]]
    )
    # class 0 from least to most sure: rows 3, 1, 2, 0; class 1: row 4; class 2: row 5
    assert least_sure_by_class(probabilities, 3).tolist() == [3, 4, 5]
    assert least_sure_by_class(probabilities, 4).tolist() == [1, 3, 4, 5]  # class 0's second turn
    assert least_sure_by_class(probabilities, 6).tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="cannot choose 7 images from 6 candidates"):
        least_sure_by_class(probabilities, 7)


def test_with_a_quota_each_class_first_gives_its_share_and_what_it_cannot_give_goes_to_the_turns():
    from ideal_pipeline.ideal.selection import least_sure_by_class

    probabilities = torch.tensor(
        [[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.7, 0.3, 0.0], [0.5, 0.4, 0.1], [0.2, 0.8, 0.0], [0.1, 0.1, 0.8]]
    )
    # class 0 from least to most sure: rows 3, 1, 2, 0; class 1: row 4; class 2: row 5
    assert least_sure_by_class(probabilities, 3, torch.tensor([3, 0, 0])).tolist() == [1, 2, 3]
    # class 2 has one row: the image it cannot give goes to the turns, whose first is the least sure row
    # left of any class (row 1 of class 0, at 0.6, before row 4 of class 1, at 0.8)
    assert least_sure_by_class(probabilities, 3, torch.tensor([1, 0, 2])).tolist() == [1, 3, 5]
    assert least_sure_by_class(probabilities, 4, torch.tensor([0, 0, 0])).tolist() == [1, 3, 4, 5]  # all in turns
    with pytest.raises(ValueError, match="a quota of 5 images does not fit the 4 to choose"):
        least_sure_by_class(probabilities, 4, torch.tensor([3, 1, 1]))


def test_a_class_marked_likeliest_takes_the_rows_likeliest_to_be_it_whatever_they_are_predicted():
    from ideal_pipeline.ideal.selection import least_sure_by_class

    probabilities = torch.tensor(
        [[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.7, 0.3, 0.0], [0.5, 0.4, 0.1], [0.2, 0.8, 0.0], [0.1, 0.1, 0.8]]
    )
    quota, rare = torch.tensor([0, 2, 0]), torch.tensor([False, True, False])
    # by prediction class 1 has row 4 only, so its second image goes to the turns (row 3, then row 5)
    assert least_sure_by_class(probabilities, 3, quota).tolist() == [3, 4, 5]
    # likeliest to be class 1: row 4 (0.8), then row 1 (0.4, tied with row 3: the first), though row 1 is predicted 0
    assert least_sure_by_class(probabilities, 3, quota, rare).tolist() == [1, 3, 4]
    # the other classes' quota is filled as before from the rows left (class 0: least sure row 3)
    assert least_sure_by_class(probabilities, 3, torch.tensor([1, 2, 0]), rare).tolist() == [1, 3, 4]
    # two likeliest classes: the larger quota chooses first, and no row is taken twice
    both = torch.tensor([False, True, True])
    assert least_sure_by_class(probabilities, 4, torch.tensor([0, 2, 2]), both).tolist() == [1, 3, 4, 5]


def test_a_round_with_a_target_quota_asks_the_selection_for_what_its_targets_ask(monkeypatch):
    from ideal_pipeline.ideal import selection

    quotas = []
    choose = selection.choose_images
    monkeypatch.setattr(selection, "choose_images", lambda *args, **kw: quotas.append(args[4:]) or choose(*args, **kw))
    for quota in ("turns", "targets", "rare_likeliest"):
        params = tiny_params(candidates=3, candidate_quota=quota)
        student, summary, args = first_round(params)
        artifact, _ = nodes.train_generator(student, summary, *args)
    assert quotas[0] == (None, None)
    asked = torch.bincount(artifact["targets"], minlength=10)
    assert torch.equal(quotas[1][0], asked) and int(asked.sum()) == 20 and quotas[1][1] is None
    # the first round's steered targets are balanced (2 of each class): no class is asked more than its share
    assert torch.equal(quotas[2][0], asked) and not quotas[2][1].any()
    # once the teacher has given digit 9 least, the targets ask more of it, and its quota takes its likeliest
    artifact, _ = nodes.train_generator(student, {**summary, "class_counts": [30] * 9 + [0]}, *args)
    asked = torch.bincount(artifact["targets"], minlength=10)
    assert int(asked[9]) > 2 and quotas[3][1].tolist() == [False] * 9 + [True]


def test_a_rescue_quota_goes_only_to_classes_given_under_half_their_share(monkeypatch):
    from ideal_pipeline.ideal import selection

    quotas = []
    choose = selection.choose_images
    monkeypatch.setattr(selection, "choose_images", lambda *args, **kw: quotas.append(args[4:]) or choose(*args, **kw))
    params = tiny_params(candidates=3, candidate_quota="rescue")
    student, summary, args = first_round(params)
    # of 97 labels a class's balanced share is 9.7: class 8 has 5 (not under half), class 9 has 4 (under)
    artifact, _ = nodes.train_generator(student, {**summary, "class_counts": [11] * 8 + [5, 4]}, *args)
    quota, starving = quotas[0]
    assert starving.tolist() == [False] * 9 + [True]
    assert quota.tolist() == [0] * 9 + [int((artifact["targets"] == 9).sum())] and int(quota[9]) > 2
    nodes.train_generator(student, summary, *args)  # no label yet: no class is starving, all in turns
    assert not quotas[1][1].any() and not quotas[1][0].any()
    with pytest.raises(ValueError, match="unknown candidate_quota 'even'"):
        selection.candidate_quota("even", artifact["targets"], [0] * 10)


def test_a_round_with_candidates_buys_b_of_them_and_the_kept_batch_comes_out_as_it_was_scored():
    plan = {"method": "ideal", "budget_scope": "ideal/seed=0/run=test/", "planned_queries": 80}
    rounds = {}
    for candidates in (1, 3):
        params = tiny_params(candidates=candidates)
        student, summary = initialize_student(plan, API, params["student"], params["seed"])
        args = (API, params["generator"], params["student"], params["batch_size"], params["seed"], COMPUTE)
        artifact, log = nodes.train_generator(student, summary, *args)
        images = materialize_synthetic(artifact, API, params["generator"], True, COMPUTE)
        rounds[candidates] = artifact, log, images
    plain, _, plain_images = rounds[1]
    chosen, log, images = rounds[3]
    selected = chosen["selected"]
    assert len(chosen["noise"]) == 60 and "selected" not in plain
    assert len(torch.unique(chosen["noise"], dim=0)) == 60  # fresh noise, not the kept batch's again
    assert len(selected) == 20 and len(set(selected.tolist())) == 20 and int(selected.max()) < 60
    assert len(images) == 40  # B images and their mirrors: the only ones sent
    assert torch.equal(images[20:], images[:20].flip(-1))
    assert len(torch.unique(images[:20], dim=0)) == 20  # no image bought twice in one round
    from_kept_batch = selected < 20  # these are the images the generator was trained on, unchanged
    assert from_kept_batch.any() and not from_kept_batch.all()
    assert torch.equal(images[:20][from_kept_batch], plain_images[selected[from_kept_batch]])
    asked = torch.tensor(log["targets"])
    assert torch.equal(asked[from_kept_batch], plain["targets"][selected[from_kept_batch]])
    assert (asked[~from_kept_batch] == -1).all()


def test_rounds_before_candidates_from_round_buy_their_generator_s_own_batch():
    plan = {"method": "ideal", "budget_scope": "ideal/seed=0/run=test/", "planned_queries": 80}
    params = tiny_params(candidates=3, candidates_from_round=2)
    student, summary = initialize_student(plan, API, params["student"], params["seed"])
    args = (API, params["generator"], params["student"], params["batch_size"], params["seed"], COMPUTE)
    first, first_log = nodes.train_generator(student, summary, *args)
    second, _ = nodes.train_generator(student, {**summary, "round": 1}, *args)
    assert "selected" not in first and len(first["noise"]) == 20
    assert first_log["targets"] == first["targets"].tolist()  # every image bought was asked for a class
    assert len(second["noise"]) == 60 and len(second["selected"]) == 20
    plain, _ = nodes.train_generator(
        student, summary, *(args[:1] + (tiny_params(candidates=1)["generator"],) + args[2:])
    )
    images = materialize_synthetic(first, API, params["generator"], False, COMPUTE)
    assert torch.equal(images, materialize_synthetic(plain, API, params["generator"], False, COMPUTE))
