"""Peak RSS of `ideal-teacher serve` under oversized / maximal request bodies.

Starts the server in a subprocess on 127.0.0.1 with a tiny classifier that takes any (3, H, W)
batch (exported .pt2, dynamic batch), sends `--concurrent` bodies of `--images` float32 images of
3x224x224 at once (1000 images = a 574 MiB body: the old default limit without --input-shape), and
reports each answer's status and the server's peak resident memory (VmHWM from /proc) before and after.

    python benchmarks/http_memory_probe.py --concurrent 1 -- --input-shape 3,224,224 --trust-model-file
    python benchmarks/http_memory_probe.py --concurrent 4 --model-input 1,28,28 -- --input-shape 1,28,28 --trust-model-file

Arguments after `--` go to `ideal-teacher serve` as they are (so the probe runs against older servers too).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "memory-probe-token"


class _TinyClassifier(nn.Module):
    """Any (N, C, H, W) -> (N, 10): a strided conv, global pooling, a linear layer."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, kernel_size=4, stride=4)
        self.head = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3)))


def _export_model(path: Path, input_shape: tuple[int, int, int]) -> None:
    """Exported for `input_shape` (C, H, W) exactly, any batch: the server's --input-shape must match it."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = (torch.rand(2, *input_shape),)
    program = torch.export.export(_TinyClassifier(input_shape[0]).eval(), example, dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))


def _peak_rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of `pid` in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return tuple(round(int(fields[name].split()[0]) / 1024, 1) for name in ("VmRSS", "VmHWM"))


def _start(model: Path, server_args: list[str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "IDEAL_TEACHER_TOKEN": TOKEN}
    command = [sys.executable, "-m", _server_module(), "serve", "--model", str(model), "--port", str(port)]
    server = subprocess.Popen(command + ["--log-level", "warning", *server_args], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise RuntimeError("teacher server did not start")
        time.sleep(0.2)


def _post(url: str, body: bytes, answers: list) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-npy"}
    try:
        answer = httpx.post(url + "/labels", content=body, headers=headers, timeout=600)
        answers.append(answer.status_code)
    except httpx.TransportError as error:
        answers.append(type(error).__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images of 3x224x224 per body (1000: 574 MiB)")
    parser.add_argument("--concurrent", type=int, default=1, help="bodies sent at once")
    parser.add_argument("--model-input", default="3,224,224", help="C,H,W the served model takes (1,28,28: LeNet's)")
    parser.add_argument("server_args", nargs="*", help="after --: arguments for `ideal-teacher serve`")
    args = parser.parse_args()

    buffer = __import__("io").BytesIO()
    np.save(buffer, np.zeros((args.images, 3, 224, 224), dtype=np.float32), allow_pickle=False)
    body = buffer.getvalue()
    with tempfile.TemporaryDirectory() as workdir:
        model = Path(workdir) / "tiny.pt2"
        _export_model(model, tuple(int(v) for v in args.model_input.split(",")))
        server_args = [*args.server_args, *(["--state-db", str(Path(workdir) / "state.sqlite")] * _has_state_db())]
        server, url = _start(model, server_args)
        try:
            before = _peak_rss_mib(server.pid)
            answers: list = []
            threads = [threading.Thread(target=_post, args=(url, body, answers)) for _ in range(args.concurrent)]
            started = time.perf_counter()
            [thread.start() for thread in threads]
            [thread.join() for thread in threads]
            elapsed = time.perf_counter() - started
            after = _peak_rss_mib(server.pid)
        finally:
            server.terminate()
            server.wait(30)
    result = {
        "server_args": args.server_args,
        "body_mib": round(len(body) / 2**20, 1),
        "concurrent": args.concurrent,
        "model_input": args.model_input,
        "statuses": sorted(map(str, answers)),
        "seconds": round(elapsed, 1),
        "rss_mib_after_start": before[0],
        "peak_rss_mib_after_start": before[1],
        "peak_rss_mib_after_probe": after[1],
    }
    print(json.dumps(result))


def _cli_source() -> Path:
    """The checkout's `ideal-teacher` source: a package's cli.py, or the single cli.py of older checkouts."""
    package = ROOT / "src/ideal_pipeline/teacher/server/cli.py"
    return package if package.exists() else ROOT / "src/ideal_pipeline/teacher/cli.py"


def _server_module() -> str:
    return (
        "ideal_pipeline.teacher.server.cli" if _cli_source().parent.name == "server" else "ideal_pipeline.teacher.cli"
    )


def _has_state_db() -> bool:
    """Whether this checkout's server takes --state-db (older ones do not): keeps probe state in the temp dir."""
    return "--state-db" in _cli_source().read_text()


if __name__ == "__main__":
    main()
