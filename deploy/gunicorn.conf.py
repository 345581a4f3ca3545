"""gunicorn settings used by ``lupus-cds serve`` (override any with ``--host/--port/--workers``).

EHRs give a hook call a few seconds (often 5-10 s) before they give up, so the worker timeout is set
below what would keep a stuck call alive past that, while the service's own fetch budget is shorter.
"""

import multiprocessing
import os

workers = int(os.environ.get("LUPUS_CDS_WORKERS", min(multiprocessing.cpu_count() * 2 + 1, 8)))
threads = int(os.environ.get("LUPUS_CDS_THREADS", 4))
worker_class = "gthread"
timeout = 20
graceful_timeout = 10
keepalive = 5
# Bodies above the service's limit are refused by the app (413); keep header limits at defaults.
accesslog = "-"
# %(U)s is the path WITHOUT the query string: query strings and bodies may carry patient ids.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
errorlog = "-"
