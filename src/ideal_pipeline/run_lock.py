"""One `kedro run` at a time per data folder: two runs writing the same rounds would mix silently.

The lock is an advisory `flock` on a file in the data folder. The kernel drops it when its process
dies, so a lock left by a killed run is taken over at once; the file records who holds it, for
the message the second run prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO

from ideal_pipeline.errors import UserError


class RunLocked(UserError, RuntimeError):
    """Another run holds the data folder."""


class RunLock:
    """`acquire()` or raise `RunLocked` naming the holder (pid, start time, command); `release()`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the whole run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise RunLocked(
                f"another run is using {self.path.parent}: {describe(holder)}. Wait for it to end, or "
                "stop it; a run that died releases the folder by itself."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": time.time(),
                    "command": " ".join(sys.argv),
                }
            )
        )
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def describe(holder: str) -> str:
    try:
        info = json.loads(holder)
    except ValueError:
        return "a run whose details are unreadable"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"]))
    return f"pid {info['pid']} on {info['host']}, started {started} ({info['command']})"
