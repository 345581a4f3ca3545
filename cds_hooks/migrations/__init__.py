"""Schema migrations of the service's database (alembic), applied when the app starts.

Every process that opens the database runs :func:`upgrade`: several `serve` workers and several
replicas start at once, so the upgrade is serialised (a PostgreSQL advisory lock held for the migration
transaction; a file lock next to a SQLite file) and is a no-op once the schema is at ``head``.

A new revision: write ``versions/NNNN_what.py`` by hand (``down_revision`` = the current head), or let
alembic draft it from :data:`cds_hooks.feedback_store.metadata`::

    python -c "from cds_hooks.migrations import revision; revision('what changed')"
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
#: arbitrary constant naming this service's advisory lock in PostgreSQL ("lupusCDS" would be clinical)
PG_LOCK_KEY = 0x6C63_6473_6D69_67  # "lcdsmig"
#: the revision that matches the schema ``metadata.create_all`` made before migrations existed
BASELINE = "0001"

log = logging.getLogger("cds_hooks.migrations")
# alembic announces its plugins (when imported) and dialect at INFO in every worker: quiet it before the
# imports below; one line of ours says what changed.
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def current(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: sa.Engine) -> None:
    """Bring the database behind ``engine`` to the newest schema, safely from many processes at once."""
    cfg = alembic_config()
    with _file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Held until this transaction commits; PostgreSQL DDL is transactional, so a second
            # replica waiting here sees the finished schema and has nothing to do.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        cfg.attributes["connection"] = connection
        tables = set(sa.inspect(connection).get_table_names())
        if "card_feedback" in tables and "alembic_version" not in tables:
            # A database from before migrations: its schema is the baseline revision.
            command.stamp(cfg, BASELINE)
        before = MigrationContext.configure(connection).get_current_revision()
        command.upgrade(cfg, "head")
        after = MigrationContext.configure(connection).get_current_revision()
        if before != after:
            # a throwaway in-memory database (CLI evaluate, tests) is not news
            level = logging.DEBUG if engine.url.database in (None, "", ":memory:") else logging.INFO
            log.log(level, "database schema upgraded from %s to %s", before or "empty", after)


@contextlib.contextmanager
def _file_lock(engine: sa.Engine) -> Iterator[None]:
    database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    import fcntl  # POSIX only; SQLite files are only shared between processes of one host

    with open(f"{database}.migrate-lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def revision(message: str, url: str | None = None) -> None:
    """Draft a new revision by comparing :data:`metadata` with a database at ``head`` (dev tool)."""
    url = url or os.environ.get("LUPUS_CDS_DATABASE_URL") or "sqlite:///./migrate-draft.sqlite3"
    upgrade(sa.create_engine(url))
    command.revision(alembic_config(url), message=message, autogenerate=True)
