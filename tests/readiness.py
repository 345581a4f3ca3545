"""Ports for the servers the tests start, and waiting until those servers answer: one way, used by every
test that starts a server, so a loaded machine slows the suite down instead of failing it.

* :func:`free_port` picks a port **below the kernel's ephemeral range** (where outgoing connections take
  their local ports, so no client socket anywhere can grab it between our choice and the server's
  bind), checks nothing listens there, and reserves it for this process with a lock file, so two test
  runs on one machine never pick the same port. (Binding port 0 and closing it, the usual trick, hands
  out an ephemeral port that any outgoing connection may take before the server binds it.)
* :func:`wait_until_ready` polls a URL until it answers, treating **every** ``requests`` error as
  "not yet" (a server still starting may refuse, reset, or accept and not answer in time), with a long
  overall deadline and short per-attempt timeouts, and fails at once, with the server's log, when the
  server process has exited.
* :func:`wait_until` does the same for any condition (a line in a log, a token the server now refuses).

These are readiness signals, not sleeps: each returns as soon as the condition holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import random
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import requests

#: long enough for a cold start on a loaded 2-core machine; a healthy server answers in a second or two
DEFAULT_DEADLINE = 180.0
HOST = "127.0.0.1"
_LOCK_DIR = Path(tempfile.gettempdir()) / "lupus-cds-test-ports"
_held: dict[int, Any] = {}  # port -> open lock file, kept for the life of the process


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _nothing_listens(port: int) -> bool:
    # No SO_REUSEADDR: a port still in TIME_WAIT counts as taken too, the stricter answer.
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, outside the ephemeral range, and reserved for this
    process (other processes using this function skip it until this one exits)."""
    high = min(_ephemeral_low(), 32768) - 1
    low = max(1024, high - 12000)
    if high - low < 1000:  # an unusual kernel set-up: fall back to what the kernel hands out
        with socket.socket() as s:
            s.bind((HOST, 0))
            return s.getsockname()[1]
    _LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for _ in range(500):
        port = random.randint(low, high)
        if port in _held:
            continue
        lock = open(_LOCK_DIR / f"{port}.lock", "w")  # noqa: SIM115 - held until the process exits
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()  # another test process holds it
            continue
        if _nothing_listens(port):
            _held[port] = lock
            return port
        lock.close()
    raise RuntimeError(f"no free port found between {low} and {high}")


def _exited(process: subprocess.Popen | None, log_path: Path | None, what: str) -> None:
    if process is not None and process.poll() is not None:
        tail = ""
        if log_path is not None and Path(log_path).exists():
            tail = "\n" + Path(log_path).read_text(errors="replace")[-3000:]
        raise AssertionError(f"{what}: the server exited with {process.returncode} before it was ready{tail}")


def wait_until(condition: Callable[[], Any], what: str, *, deadline: float = DEFAULT_DEADLINE,
               process: subprocess.Popen | None = None, log_path: Path | None = None,
               interval: float = 0.1) -> Any:
    """Poll ``condition()`` until it returns something true (returned), ``process`` exits (fails with its
    log) or ``deadline`` seconds pass (fails naming ``what``)."""
    end = time.monotonic() + deadline
    while True:
        _exited(process, log_path, what)
        result = condition()
        if result:
            return result
        if time.monotonic() > end:
            _exited(process, log_path, what)
            tail = ""
            if log_path is not None and Path(log_path).exists():
                tail = "\n" + Path(log_path).read_text(errors="replace")[-3000:]
            raise AssertionError(f"{what}: not true after {deadline:.0f} s{tail}")
        time.sleep(interval)


def wait_until_ready(url: str, *, deadline: float = DEFAULT_DEADLINE, process: subprocess.Popen | None = None,
                     log_path: Path | None = None, statuses: Collection[int] = (200,)) -> requests.Response:
    """GET ``url`` until it answers with one of ``statuses``; any ``requests`` error (refused, reset, read
    timeout, ...) means "not ready yet". Returns the answer."""
    answer: list[requests.Response] = []

    def answers() -> bool:
        remaining = max(1.0, min(10.0, end - time.monotonic()))
        try:
            response = requests.get(url, timeout=(remaining, remaining))
        except requests.RequestException:
            return False
        with contextlib.suppress(Exception):
            response.close()
        answer[:] = [response]
        return response.status_code in statuses

    end = time.monotonic() + deadline
    wait_until(answers, f"{url} did not answer {'/'.join(map(str, statuses))}", deadline=deadline,
               process=process, log_path=log_path, interval=0.2)
    return answer[0]

