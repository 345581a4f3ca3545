"""Runs the app under gunicorn, a production WSGI server, for ``lupus-cds serve``.

Settings come from ``cds_hooks/gunicorn_conf.py`` (or the file named by ``LUPUS_CDS_GUNICORN_CONF``);
``--host``, ``--port`` and ``--workers`` override it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gunicorn.app.base import Application

DEFAULT_CONF = Path(__file__).resolve().parent / "gunicorn_conf.py"  # in the package: wheels have it too


class _Server(Application):  # Application: it can read a config file
    def __init__(self, options: dict[str, Any], conf_file: Path | None):
        self.options = options
        self.conf_file = conf_file
        super().__init__()

    def load_config(self) -> None:
        if self.conf_file and self.conf_file.is_file():
            self.load_config_from_file(str(self.conf_file))
        for key, value in self.options.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self) -> Any:
        from .app import create_app

        return create_app()


def run_gunicorn(host: str = "127.0.0.1", port: int = 8080, workers: int | None = None) -> None:
    # The JWT aud names the URL clients use; without LUPUS_CDS_PUBLIC_URL that is where we listen.
    os.environ.setdefault("LUPUS_CDS_PUBLIC_URL", f"http://{host}:{port}")
    conf = os.environ.get("LUPUS_CDS_GUNICORN_CONF")
    _Server({"bind": f"{host}:{port}", "workers": workers}, Path(conf) if conf else DEFAULT_CONF).run()
