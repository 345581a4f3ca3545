"""Runs the app under granian for ``lupus-cds serve``: one worker process per CPU by default.

Why granian: its Rust HTTP stack (tokio, hyper) holds every connection without a Python thread, so idle
and slow clients cannot stall the service, and it served the typical hook call faster than gunicorn's
threaded or gevent workers in the same benchmark (README, "Serving"). :mod:`cds_hooks.serving` is the
adapter that hands it complete requests and enforces admission control.

What the main process sets up before the workers start:

* logs: granian's own lines are JSON like the app's (``LUPUS_CDS_LOG_FORMAT``); the access log is written
  by :mod:`cds_hooks.serving`, so granian's is off;
* metrics: every worker is a process; ``prometheus_client`` shares their values through files in
  ``PROMETHEUS_MULTIPROC_DIR``, set here (a fresh temporary directory unless the environment names one)
  before any worker imports the library, emptied at start (stale files would add a previous run's counts)
  and removed at exit when it was ours;
* replay protection: workers share the client-JWT replay store (SQLite on this host, or Redis); the
  in-memory store is refused with several workers, where it would let a token be replayed to another.

SIGTERM or SIGINT stops gracefully: granian stops accepting, every worker answers what it admitted (up
to ``GRACEFUL_SECONDS``), then exits.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Mapping
from typing import Any

#: how long a stopping worker may take to answer what it admitted before it is killed
GRACEFUL_SECONDS = 10
#: seconds a client has to send a request's headers; also how long an idle connection is kept
HEADER_TIMEOUT_SECONDS = 10
#: connections one worker holds at once (idle ones included); granian closes idle ones after the timeout
CONNECTIONS_PER_WORKER = 1024


def default_workers() -> int:
    """One worker process per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now. SO_REUSEADDR, as the servers themselves set it:
    without it, connections of a server stopped a moment ago (TIME_WAIT) would count as "in use"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def start_lines(cfg: Mapping[str, Any], host: str, port: int, workers: int, clients: int) -> list[str]:
    """What ``serve`` says in plain words at start (before the JSON log lines): where the service is, how
    many trusted clients it loaded, whether it checks client JWTs, and what to do when no call can pass."""
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    lines = [f"lupus-cds: serving http://{shown}:{port}/cds-services with {workers} worker"
             f"{'s' if workers != 1 else ''}"]
    if cfg["LUPUS_CDS_ALLOW_UNSIGNED"]:
        lines.append("lupus-cds: client JWTs are NOT checked (LUPUS_CDS_ALLOW_UNSIGNED): for a local try only")
    elif clients:
        lines.append(f"lupus-cds: client JWTs are checked: {clients} trusted client{'s' if clients != 1 else ''} "
                     "loaded from LUPUS_CDS_CLIENTS")
    else:
        lines.append("lupus-cds: WARNING: client JWTs are checked but no trusted client is configured, so every "
                     "hook call will be refused with 401. Name your EHR's keys in a clients file "
                     "(LUPUS_CDS_CLIENTS=clients.json, see README 'Security'), or run `lupus-cds sandbox` "
                     "for a local try")
    return lines


def log_config(fmt: str, level: str) -> dict[str, Any] | None:
    """granian's logging (``dictConfig``) in the service's format, or None to leave granian's own."""
    if fmt == "none":
        return None
    formatter = "cds_hooks.logs.JSONFormatter" if fmt == "json" else "cds_hooks.logs.TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"service": {"()": formatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "service",
                                "stream": "ext://sys.stderr"}},
        "loggers": {
            "_granian": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "granian.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        },
    }


#: the RSGI app factory each worker calls
TARGET = "cds_hooks.serving:rsgi_app"


def build_server(host: str = "127.0.0.1", port: int = 8080, workers: int | None = None,
                 target: str = TARGET) -> Any:
    """The granian server ``serve`` runs (not started). Reads the settings from the environment.

    :param target: ``module:factory`` of the RSGI app (another app served the same way: benchmarks).
    """
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    from . import config

    # The JWT aud names the URL clients use; without LUPUS_CDS_PUBLIC_URL that is where we listen.
    os.environ.setdefault("LUPUS_CDS_PUBLIC_URL", f"http://{host}:{port}")
    cfg = config.load({})
    # The SMART app keeps launches and sessions in memory without Redis: a launch must end in the worker that
    # began it, so one worker unless Redis is there (or the operator asks for more).
    one_process = cfg.get("LUPUS_CDS_SMART_APP") and not cfg.get("LUPUS_CDS_REDIS_URL")
    count = workers or int(cfg.get("LUPUS_CDS_WORKERS") or 0) or (1 if one_process else default_workers())
    signed = not cfg["LUPUS_CDS_ALLOW_UNSIGNED"]
    if count > 1 and signed and not cfg.get("LUPUS_CDS_REDIS_URL") \
            and str(cfg.get("LUPUS_CDS_REPLAY_DB") or "").strip().lower() == "memory":
        raise ValueError(f"LUPUS_CDS_REPLAY_DB=memory keeps replay protection in one process: with {count} "
                         "workers a token could be replayed to another; use the default (SQLite), Redis, "
                         "or --workers 1")
    level = str(cfg["LUPUS_CDS_LOG_LEVEL"]).lower()
    server = Server(
        target, address=host, port=port, interface=Interfaces.RSGI, factory=True,
        workers=count, backlog=max(1024, CONNECTIONS_PER_WORKER), backpressure=CONNECTIONS_PER_WORKER,
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_TIMEOUT_SECONDS * 1000),
        websockets=False, log_enabled=True, log_level=LogLevels(level if level in LogLevels.__members__ else "info"),
        log_dictconfig=log_config(cfg["LUPUS_CDS_LOG_FORMAT"], level), log_access=False,
        respawn_failed_workers=True, workers_kill_timeout=GRACEFUL_SECONDS)
    own_dir = _metrics_dir()
    server.on_startup(_empty_metrics_dir)
    if own_dir:
        server.on_shutdown(lambda: shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True))
    return server


def _metrics_dir() -> bool:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` before any worker starts; True when it is a directory of ours."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return False
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cds-hooks-metrics-")
    return True


def _empty_metrics_dir() -> None:
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def run(host: str = "127.0.0.1", port: int = 8080, workers: int | None = None) -> None:
    build_server(host, port, workers).serve()
