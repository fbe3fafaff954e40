"""Threads and precision chosen for the machine (runtime.set_threads, runtime.resolve_precision)."""

from __future__ import annotations

import os

import pytest
import torch

from ideal_pipeline import runtime

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_an_integer_sets_exactly_that_many_threads():
    assert runtime.set_threads(1) == 1 and torch.get_num_threads() == 1


def test_zero_and_none_keep_the_current_setting():
    torch.set_num_threads(1)
    assert runtime.set_threads(0) == 1 and runtime.set_threads(None) == 1


def test_auto_shares_the_usable_cores_between_concurrent_runs(monkeypatch):
    monkeypatch.setattr(runtime, "usable_cores", lambda: 16)
    monkeypatch.delenv(runtime.CONCURRENT_RUNS_ENV, raising=False)
    assert runtime.set_threads("auto") == 16
    monkeypatch.setenv(runtime.CONCURRENT_RUNS_ENV, "3")
    assert runtime.set_threads("auto", CPU) == 5 and torch.get_num_threads() == 5
    monkeypatch.setenv(runtime.CONCURRENT_RUNS_ENV, "40")
    assert runtime.set_threads("auto") == 1


def test_auto_on_cuda_takes_few_threads(monkeypatch):
    monkeypatch.setattr(runtime, "usable_cores", lambda: 16)
    monkeypatch.delenv(runtime.CONCURRENT_RUNS_ENV, raising=False)
    assert runtime.auto_threads(torch.device("cuda")) == runtime.CUDA_RUN_THREADS
    monkeypatch.setattr(runtime, "usable_cores", lambda: 1)
    assert runtime.auto_threads(torch.device("cuda")) == 1


def test_usable_cores_respect_the_affinity_mask():
    assert 1 <= runtime.usable_cores() <= len(os.sched_getaffinity(0))


def test_a_cgroup_quota_is_read_in_whole_cpus(tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    assert runtime._cgroup_cpu_quota(quota) == 1
    quota.write_text("max 100000\n")
    assert runtime._cgroup_cpu_quota(quota) is None
    assert runtime._cgroup_cpu_quota(tmp_path / "absent") is None
    quota.write_text("garbage")
    assert runtime._cgroup_cpu_quota(quota) is None


@pytest.mark.parametrize("bad", [-1, 2.5, "four", True])
def test_a_bad_thread_setting_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="num_threads"):
        runtime.set_threads(bad)


@pytest.mark.parametrize("bad", ["0", "two", "-1"])
def test_a_bad_concurrent_runs_variable_is_a_clear_error(monkeypatch, bad):
    monkeypatch.setenv(runtime.CONCURRENT_RUNS_ENV, bad)
    with pytest.raises(ValueError, match=runtime.CONCURRENT_RUNS_ENV):
        runtime.set_threads("auto")


def test_explicit_precisions_resolve_to_their_dtype():
    assert runtime.resolve_precision("fp32", CPU) == torch.float32
    assert runtime.resolve_precision("bf16", CPU) == torch.bfloat16
    assert runtime.resolve_precision(torch.bfloat16, CPU) == torch.bfloat16


def test_auto_precision_follows_the_cpu_bf16_instructions(monkeypatch):
    runtime._cpu_has_native_bf16.cache_clear()
    monkeypatch.setattr(runtime, "_cpuinfo_flags", lambda: {"avx512f", "avx512_bf16"})
    assert runtime.resolve_precision("auto", CPU) == torch.bfloat16
    runtime._cpu_has_native_bf16.cache_clear()
    monkeypatch.setattr(runtime, "_cpuinfo_flags", lambda: {"avx512f", "avx2"})
    assert runtime.resolve_precision("auto", CPU) == torch.float32
    runtime._cpu_has_native_bf16.cache_clear()


def test_auto_precision_is_fp32_on_a_cpu_without_native_bf16():
    runtime._cpu_has_native_bf16.cache_clear()
    flags = runtime._cpuinfo_flags()
    if flags & {"avx512_bf16", "amx_bf16"} or not flags:
        pytest.skip("this CPU has native bf16 (or no /proc/cpuinfo): the check is for CPUs without it")
    assert runtime.resolve_precision("auto", CPU) == torch.float32


@pytest.mark.parametrize("bad", ["fp16", "float32", torch.float16, torch.float64])
def test_an_unknown_precision_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="precision"):
        runtime.check_precision(bad, CPU)


def test_the_loss_meter_averages_like_python_floats():
    meter = runtime.LossMeter(CPU)
    batches = [(torch.tensor(0.1234567), 250), (torch.tensor(2.7182817), 250), (torch.tensor(1.0000001), 13)]
    total = 0.0
    for loss, samples in batches:
        meter.add(loss, samples)
        total += loss.item() * samples
    assert meter.mean() == total / 513
    assert runtime.LossMeter(CPU).mean() == 0.0
