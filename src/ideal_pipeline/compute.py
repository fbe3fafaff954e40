"""Where and how the training loops compute: resolved once from `params:compute` into a `Compute`.

`resolve_compute` turns the settings (`auto` included) into one value, applies its thread count to
this process, and is the only place that decides; the engine takes the resolved value.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ideal_pipeline.errors import UserError

CONCURRENT_RUNS_ENV = "IDEAL_CONCURRENT_RUNS"
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = r"^(auto|cpu|mps|cuda(:\d+)?)$"
# Threads for a CUDA run: the GPU does the work; the CPU only draws random numbers and labels
# with a local teacher, and more threads would only compete with the other runs on the machine.
CUDA_RUN_THREADS = 2


class ComputeUnavailable(UserError, RuntimeError):
    """The device or precision asked for does not exist on this machine."""


@dataclass(frozen=True)
class Compute:
    """A resolved compute setting: the device, the autocast dtype of the loops, the thread count."""

    device: torch.device
    precision: torch.dtype = torch.float32
    threads: int = 0  # 0: torch's default, left as it is

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for forward passes and losses, or nothing for fp32."""
        if self.precision == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.precision)


CPU = Compute(torch.device("cpu"))


def resolve_compute(settings: Any, apply_threads: bool = True) -> Compute:
    """`params:compute` (typed, or a {device, num_threads, precision} mapping) resolved on this machine.

    - device `auto`: CUDA when present; asking for CUDA without one is a clear error.
    - num_threads `auto`: no oversubscription when several runs share a machine: on CUDA 2, on a
      CPU the cores this process may use (affinity, capped by a cgroup quota) divided by
      IDEAL_CONCURRENT_RUNS (1 when unset). 0 keeps torch's default.
    - precision `auto`: bf16 where the hardware runs it natively (CUDA with bf16; an x86 CPU with
      AVX512-BF16 or AMX-BF16), fp32 elsewhere; decided from the reported capability, not a timing
      probe, so the same parameters always give the same results on one machine.
    """
    device = _device(_setting(settings, "device"))
    threads = _threads(_setting(settings, "num_threads"), device)
    compute = Compute(device, _precision(_setting(settings, "precision"), device), threads)
    if apply_threads and threads:
        torch.set_num_threads(threads)
    return compute


def _setting(settings: Any, name: str) -> Any:
    return settings[name] if isinstance(settings, dict) else getattr(settings, name)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ComputeUnavailable(f"device {name!r} requested but CUDA is not available; use device: cpu or auto")
    return device


def _threads(setting: int | str, device: torch.device) -> int:
    if setting == "auto":
        budget = max(1, usable_cores() // concurrent_runs())
        return min(CUDA_RUN_THREADS, budget) if device.type == "cuda" else budget
    return int(setting)


def _precision(setting: str, device: torch.device) -> torch.dtype:
    if setting == "fp32":
        return torch.float32
    if setting == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise ComputeUnavailable(f"precision bf16 requested but {torch.cuda.get_device_name(device)} has no bf16")
        return torch.bfloat16
    return torch.bfloat16 if bf16_is_native(device) else torch.float32


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, quota) if quota else cores)


def _cgroup_cpu_quota(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """Whole CPUs allowed by the cgroup v2 quota ("max" = none); None when there is none or no file."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else max(1, int(quota) // int(period))
    except (OSError, ValueError):
        return None


def concurrent_runs() -> int:
    value = os.environ.get(CONCURRENT_RUNS_ENV, "").strip()
    if not value:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise ComputeUnavailable(
            f"{CONCURRENT_RUNS_ENV} must be a positive integer (runs sharing this machine), got {value!r}"
        )
    return int(value)


def bf16_is_native(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return _cpu_has_native_bf16()
    return False


@functools.cache
def _cpu_has_native_bf16() -> bool:
    flags = _cpuinfo_field("flags")
    if flags:
        return bool(set(flags.split()) & {"avx512_bf16", "amx_bf16"})
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def _cpuinfo_field(name: str, path: Path = Path("/proc/cpuinfo")) -> str:
    """The first `name : value` line's value in /proc/cpuinfo ('' when absent)."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    return next((line.partition(":")[2].strip() for line in text.splitlines() if line.startswith(name)), "")


def signature(compute: Compute) -> dict[str, Any]:
    """What decides the arithmetic of a run on this machine: device, precision, threads, torch, processor."""
    processor = torch.cuda.get_device_name(compute.device) if compute.device.type == "cuda" else None
    return {
        "device": compute.device.type,
        "precision": str(compute.precision).removeprefix("torch."),
        "threads": compute.threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "processor": processor or _cpuinfo_field("model name") or platform.processor() or platform.machine(),
    }


class LossMeter:
    """Sum of (batch loss x batch size) kept on the device and read once: no host sync per step.

    Accumulated in float64 where the device has it: each term and sum then round exactly as the
    Python floats of `loss.item() * n` would.
    """

    def __init__(self, device: torch.device):
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.total = torch.zeros((), dtype=dtype, device=device)
        self.seen = 0

    def add(self, loss: torch.Tensor, samples: int) -> None:
        self.total += loss.detach().to(self.total.dtype) * samples
        self.seen += samples

    def mean(self) -> float:
        """The mean loss per sample (a host sync); 0.0 when nothing was added."""
        return self.total.item() / max(self.seen, 1)
