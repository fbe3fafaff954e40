"""Who holds a ledger reservation, and whether that caller can still send it.

A holder id names one `label()` call: machine, process (pid and start time, so a reused pid is
not taken for the holder) and a random part.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux /proc), so a reused pid is not taken for the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie is dead: it sends nothing more


def new_holder() -> str:
    """An id for one label() call: machine, process (pid and start time) and a random part."""
    return f"{socket.gethostname()}|{os.getpid()}|{_process_start(os.getpid())}|{uuid.uuid4().hex}"


def holder_alive(holder: str) -> bool | None:
    """True/False for a holder on this machine; None when it is on another machine (unknown).

    A call of this process is alive: every call leaves its reservations committed, released or
    marked unsettled when it ends, however it ends.
    """
    host, pid, started, _call = holder.split("|")
    if host != socket.gethostname():
        return None
    if int(pid) == os.getpid():
        return True
    if not Path("/proc").is_dir():  # no /proc: ask the kernel whether the pid exists
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return _process_start(int(pid)) == started and started != "None"
