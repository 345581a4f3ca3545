"""gunicorn settings used by ``lupus-cds serve`` (override any with ``--host/--port/--workers``, or name
another file with ``LUPUS_CDS_GUNICORN_CONF``); plain gunicorn reads them with
``gunicorn -c python:cds_hooks.gunicorn_conf 'cds_hooks.app:create_app()'``. They ship inside the package,
so a wheel install serves with them too. gunicorn executes this file; nothing else imports it.

EHRs give a hook call a few seconds (often 5-10 s) before they give up, so the worker timeout is set
below what would keep a stuck call alive past that, while the service's own fetch budget is shorter.

Logs: gunicorn's own lines and the access log are JSON, like the app's (``cds_hooks.logs``). The access
log names the path only — never the query string or the body, which may carry patient ids.

Metrics: every worker is a process; ``prometheus_client`` shares their counters through files in
``PROMETHEUS_MULTIPROC_DIR``. It must be set before a worker imports the library, so it is set here
(a fresh temporary directory unless the environment names one), emptied when gunicorn starts (stale
files would add a previous run's counts), and each dead worker's live files are removed (``child_exit``).
"""

import multiprocessing
import os
import shutil
import tempfile

from gunicorn.glogging import Logger

_signed = os.environ.get("LUPUS_CDS_ALLOW_UNSIGNED", "").strip().lower() not in ("1", "true", "yes", "on")
# The client-JWT replay store (jti) is in memory unless LUPUS_CDS_REDIS_URL is set, and each worker process
# has its own: a token replayed to another worker would pass. So, by default, several workers only with
# Redis; otherwise one worker whose threads give the concurrency (hook calls mostly wait on I/O).
# The SMART app's launches and sessions are kept in memory too without Redis (a launch started in one
# worker must finish in the same one).
_smart_app = os.environ.get("LUPUS_CDS_SMART_APP", "").strip().lower() in ("1", "true", "yes", "on")
_default_workers = min(multiprocessing.cpu_count() * 2 + 1, 8) \
    if (os.environ.get("LUPUS_CDS_REDIS_URL") or (not _signed and not _smart_app)) else 1
workers = int(os.environ.get("LUPUS_CDS_WORKERS") or _default_workers)
threads = int(os.environ.get("LUPUS_CDS_THREADS") or 4)
worker_class = "gthread"
timeout = 20
graceful_timeout = 10
keepalive = 5
# Bodies above the service's limit are refused by the app (413); keep header limits at defaults.
accesslog = "-"
errorlog = "-"
# gunicorn >= 24 opens a management socket under $HOME by default: several instances on one host (tests,
# replicas sharing a node) would contend for it, and a read-only container home cannot hold it.
control_socket_disable = True

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cds-hooks-metrics-")
    os.environ["CDS_HOOKS_OWN_METRICS_DIR"] = "1"  # ours to delete at exit


def on_starting(server):
    if server.cfg.workers > 1 and _signed and not os.environ.get("LUPUS_CDS_REDIS_URL"):
        # Each worker process has its own in-memory jti store: a token replayed to another worker passes.
        server.log.warning("%d workers without LUPUS_CDS_REDIS_URL: client-JWT replay protection is per "
                           "worker process; set LUPUS_CDS_REDIS_URL (or --workers 1)", server.cfg.workers)
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if os.environ.get("CDS_HOOKS_OWN_METRICS_DIR"):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


class JSONLogger(Logger):
    """gunicorn's logger with the service's JSON formatter and a structured, query-free access line."""

    def setup(self, cfg):
        super().setup(cfg)
        from cds_hooks.logs import JSONFormatter

        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(JSONFormatter())

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        request_id = next((value for name, value in resp.headers if name.lower() == "x-request-id"), None)
        fields = {
            "remote": environ.get("REMOTE_ADDR"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),  # without QUERY_STRING: it may name a patient
            "status": resp.status_code if hasattr(resp, "status_code") else str(resp.status).split(" ")[0],
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 1),
        }
        if request_id:
            fields["request_id"] = request_id
        self.access_log.info("request", extra={"fields": fields})


logger_class = JSONLogger
