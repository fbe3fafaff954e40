"""The ledger: labels bound to their teacher, spending reserved atomically across processes, tags."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time

import pytest
import torch

from ideal_pipeline.models.classifiers import LeNet
from ideal_pipeline.pipelines.external_teacher.nodes import label_test_set
from ideal_pipeline.teacher import ledger as ledger_module
from ideal_pipeline.teacher.blackbox import AccountedTeacher, QueryBudgetExceeded, check_planned_spend
from ideal_pipeline.teacher.connect import accounted_teacher, http_fingerprint
from ideal_pipeline.teacher.ledger import LegacyLedgerError, QueryLedger, TeacherMismatch
from ideal_pipeline.teacher.local import save_model_file

pytestmark = pytest.mark.timeout(120)
CARD = {"kind": "model_file", "input_shape": [1, 28, 28], "num_classes": 10, "class_names": list(range(10))}


def distinct_images(n, seed=0):
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def pixel_sum_labels(images):
    return (images.flatten(1).sum(1) * 255).round().long() % 10


class BillingTeacher:
    """Labels = pixel sum mod 10; appends one line per image sent to `bill` (shared by processes)."""

    def __init__(self, bill, delay_s=0.0, fail=False):
        self.bill, self.delay_s, self.fail = bill, delay_s, fail

    def label(self, images):
        if self.fail:
            raise ConnectionError("teacher went away")
        with open(self.bill, "a") as f:  # O_APPEND: lines of concurrent writers do not mix
            f.write("x\n" * len(images))
        time.sleep(self.delay_s)
        return pixel_sum_labels(images)


def billed(bill) -> int:
    return len(open(bill).read().splitlines()) if os.path.exists(bill) else 0


def teacher_files(tmp_path):
    """Two model files of the same shape whose answers differ."""
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = LeNet().eval()
        model.classifier.bias.data += 3 * torch.eye(10)[seed]  # different favourite classes
        path = tmp_path / f"teacher_{seed}.safetensors"
        save_model_file(model, path, torch.rand(2, 1, 28, 28))
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------ teacher binding
def test_another_teachers_labels_are_never_served(tmp_path):
    first, second = teacher_files(tmp_path)
    ledger = QueryLedger(tmp_path / "ledger.sqlite")
    images = distinct_images(40)
    access = {"max_batch": 500}
    accounted_teacher({**access, "model_path": str(first)}, CARD, ledger, max_queries=100).label(images)
    with pytest.raises(TeacherMismatch) as refusal:
        accounted_teacher({**access, "model_path": str(second)}, CARD, ledger, max_queries=100)
    message = str(refusal.value)
    fingerprints = [line for line in message.split() if line.startswith("model-file:sha256:")]
    assert len(set(fingerprints)) == 2 and "new ledger file" in message and "40 labels" in message
    assert ledger.paid_queries() == 40  # nothing of the second teacher was mixed in


def test_a_foreign_ledger_is_refused_even_when_written_meanwhile(tmp_path):
    """The check is repeated inside each reservation's transaction, not only at construction."""
    path = tmp_path / "ledger.sqlite"
    bill = tmp_path / "bill"
    late = AccountedTeacher(BillingTeacher(bill), QueryLedger(path), 100, teacher_fingerprint="teacher-b")
    AccountedTeacher(BillingTeacher(bill), QueryLedger(path), 100, teacher_fingerprint="teacher-a").label(
        distinct_images(5)
    )
    with pytest.raises(TeacherMismatch, match="teacher-a.*teacher-b"):
        late.label(distinct_images(5))
    assert billed(bill) == 5


def test_evaluation_ledgers_are_bound_too(tmp_path):
    first, second = teacher_files(tmp_path)
    ledger = QueryLedger(tmp_path / "evaluation.sqlite")
    real_test = {"images": distinct_images(30), "labels": torch.arange(30) % 10}
    params = {"kind": "model_file", "max_batch": 100, "evaluation_max_queries": 100}
    label_test_set(real_test, {**CARD, "model_path": str(first)}, ledger, params)
    with pytest.raises(TeacherMismatch):
        label_test_set(real_test, {**CARD, "model_path": str(second)}, ledger, params)


def test_http_fingerprints_name_the_endpoint_and_its_card():
    base = http_fingerprint("http://a/labels", CARD)
    assert base == http_fingerprint("http://a/labels", {**CARD, "kind": "http", "url": "ignored"})
    assert base != http_fingerprint("http://b/labels", CARD)
    assert base != http_fingerprint("http://a/labels", {**CARD, "class_names": list("abcdefghij")})


def _legacy_ledger(path, rows):
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE labels (image_key TEXT PRIMARY KEY, label INTEGER NOT NULL, paid_at REAL NOT NULL)"
    )
    connection.executemany("INSERT INTO labels VALUES (?, ?, 0)", rows)
    connection.commit()
    connection.close()


def test_a_legacy_ledger_with_labels_is_refused_until_adopted(tmp_path, capsys):
    path, images = tmp_path / "old.sqlite", distinct_images(3)
    from ideal_pipeline.teacher.blackbox import image_key

    _legacy_ledger(path, [(image_key(image), 7) for image in images])
    assert QueryLedger(path).paid_queries() == 3
    with pytest.raises(LegacyLedgerError, match=r"3 labels.*adopt .*--fingerprint teacher-a"):
        AccountedTeacher(BillingTeacher(tmp_path / "bill"), QueryLedger(path), 10, teacher_fingerprint="teacher-a")
    ledger_module.main(["adopt", str(path), "--fingerprint", "teacher-a"])
    assert "3 labels bound to teacher teacher-a" in capsys.readouterr().out
    adopted = AccountedTeacher(
        BillingTeacher(tmp_path / "bill"), QueryLedger(path), 10, teacher_fingerprint="teacher-a"
    )
    assert adopted.label(images).tolist() == [7, 7, 7] and billed(tmp_path / "bill") == 0
    with pytest.raises(TeacherMismatch):
        AccountedTeacher(BillingTeacher(tmp_path / "bill"), QueryLedger(path), 10, teacher_fingerprint="teacher-b")


def test_an_empty_legacy_ledger_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    _legacy_ledger(path, [])
    accounted = AccountedTeacher(BillingTeacher(tmp_path / "bill"), QueryLedger(path), 10, teacher_fingerprint="t")
    accounted.label(distinct_images(2), tag="x")
    assert QueryLedger(path).paid_queries("x") == 2


# ------------------------------------------------------------------------------ tags and the up-front check
def test_tags_count_rows_and_reused_labels_keep_theirs(tmp_path):
    ledger = QueryLedger(tmp_path / "ledger.sqlite")
    accounted = AccountedTeacher(BillingTeacher(tmp_path / "bill"), ledger, 100, teacher_fingerprint="t")
    accounted.label(distinct_images(10, seed=1), tag="ideal/seed=0/round=001")
    accounted.label(distinct_images(6, seed=2), tag="ideal/seed=0/round=002")
    accounted.label(torch.cat([distinct_images(4, seed=3), distinct_images(10, seed=1)]), tag="ideal/seed=1/round=001")
    assert ledger.paid_queries() == 20
    assert ledger.paid_queries("ideal/seed=0/") == 16 and ledger.paid_queries("ideal/seed=0/round=002") == 6
    assert ledger.paid_queries("ideal/seed=1/") == 4 and ledger.paid_queries("evaluate") == 0


def test_the_planned_spend_counts_what_the_ledger_holds(tmp_path):
    ledger = QueryLedger(tmp_path / "ledger.sqlite")
    accounted = AccountedTeacher(BillingTeacher(tmp_path / "bill"), ledger, 100, teacher_fingerprint="t")
    accounted.label(distinct_images(30, seed=1), tag="ideal/seed=0/round=001")
    accounted.label(distinct_images(20, seed=2), tag="ideal/seed=1/round=001")
    # A rerun of seed 1 reuses its 20 labels free; seed 0's 30 count as spent: 30 + 70 fits in 100.
    check_planned_spend(ledger, planned_queries=70, max_queries=100, own_tag_prefix="ideal/seed=1/")
    check_planned_spend(ledger, planned_queries=80, max_queries=100, own_tag_prefix="ideal/seed=0/")
    with pytest.raises(
        QueryBudgetExceeded, match=r"plans 71 queries \(20 of them.*30 other.*30 \+ 71 = 101 > max_queries=100"
    ):
        check_planned_spend(ledger, planned_queries=71, max_queries=100, own_tag_prefix="ideal/seed=1/")
    with pytest.raises(QueryBudgetExceeded, match="50 \\+ 51 = 101"):
        check_planned_spend(ledger, planned_queries=51, max_queries=100, own_tag_prefix="ideal/seed=2/")


# ------------------------------------------------------------------------------ atomic spending
def _label_in_process(path, bill, first, count, max_queries, results):
    images = distinct_images(160)[first : first + count]
    accounted = AccountedTeacher(
        BillingTeacher(bill, delay_s=0.02), QueryLedger(path), max_queries, max_batch=7, teacher_fingerprint="t"
    )
    try:
        labels = accounted.label(images, tag=f"p{first}")
        results.put((first, labels.tolist() == pixel_sum_labels(images.float() / 255).tolist(), accounted.queries_sent))
    except QueryBudgetExceeded:
        results.put((first, None, accounted.queries_sent))


def test_processes_sharing_a_ledger_stay_within_the_budget_together(tmp_path):
    """Three processes, 80 images each, overlapping by 40, each with max_queries=100: 160 wanted."""
    path, bill = tmp_path / "ledger.sqlite", tmp_path / "bill"
    QueryLedger(path)  # created once, as the catalog's dataset does
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [
        context.Process(target=_label_in_process, args=(path, bill, first, 80, 100, results)) for first in (0, 40, 80)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=100) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    ledger = QueryLedger(path)
    assert billed(bill) <= 100
    assert ledger.paid_queries() == billed(bill) == sum(sent for _, _, sent in outcomes)
    assert ledger.reserved_queries() == 0
    assert all(correct is not False for _, correct, _ in outcomes)  # whoever finished got the right labels
    assert any(correct is None for _, correct, _ in outcomes)  # and the budget stopped someone


def test_threads_waiting_on_each_others_reservations_pay_once(tmp_path):
    path, bill = tmp_path / "ledger.sqlite", tmp_path / "bill"
    shared = QueryLedger(path)
    images = distinct_images(60)
    answers = {}

    def work(name, ledger):
        accounted = AccountedTeacher(
            BillingTeacher(bill, delay_s=0.01), ledger, 1000, max_batch=5, teacher_fingerprint="t"
        )
        answers[name] = accounted.label(images)

    threads = [threading.Thread(target=work, args=(i, shared if i % 2 else QueryLedger(path))) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = pixel_sum_labels(images.float() / 255)
    assert all(torch.equal(labels, expected) for labels in answers.values())
    assert billed(bill) == 60 == shared.paid_queries()


def test_a_failed_request_releases_its_reservation(tmp_path):
    ledger = QueryLedger(tmp_path / "ledger.sqlite")
    with pytest.raises(ConnectionError):
        AccountedTeacher(BillingTeacher(tmp_path / "bill", fail=True), ledger, 10, teacher_fingerprint="t").label(
            distinct_images(10)
        )
    assert ledger.spent_queries() == 0
    AccountedTeacher(BillingTeacher(tmp_path / "bill"), ledger, 10, teacher_fingerprint="t").label(distinct_images(10))
    assert ledger.paid_queries() == 10


def _label_forever(path, bill):
    AccountedTeacher(BillingTeacher(bill, delay_s=600), QueryLedger(path), 10, teacher_fingerprint="t").label(
        distinct_images(10)
    )


def test_a_killed_senders_reservation_keeps_counting_and_is_taken_over(tmp_path):
    path, bill = tmp_path / "ledger.sqlite", tmp_path / "bill"
    QueryLedger(path)
    sender = multiprocessing.get_context("spawn").Process(target=_label_forever, args=(path, bill))
    sender.start()
    deadline = time.monotonic() + 60
    while billed(bill) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    sender.kill()  # after sending: the teacher may have billed these 10
    sender.join()
    ledger = QueryLedger(path)
    assert (ledger.paid_queries(), ledger.reserved_queries(), ledger.spent_queries()) == (0, 10, 10)
    with pytest.raises(QueryBudgetExceeded, match="already spent 10 \\(of which 10 reserved"):
        AccountedTeacher(BillingTeacher(bill), ledger, 10, teacher_fingerprint="t").label(distinct_images(1, seed=5))
    resumed = AccountedTeacher(BillingTeacher(bill), ledger, 10, teacher_fingerprint="t")
    labels = resumed.label(distinct_images(10))  # the same images: the stale reservation, no new budget
    assert torch.equal(labels, pixel_sum_labels(distinct_images(10).float() / 255))
    assert (ledger.paid_queries(), ledger.reserved_queries()) == (10, 0)
