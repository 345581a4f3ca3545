"""Durable storage of card feedback (CDS Hooks section "Feedback"), on any SQLAlchemy database.

SQLite by default (WAL journal, so readers never block the writer), PostgreSQL or another engine by
``LUPUS_CDS_DATABASE_URL``. A feedback item is identified by (service, card uuid, outcome, outcome
timestamp, client): the same item posted twice is stored once (FB-5), and a write is committed before
the endpoint answers 200.

The schema is created and evolved by alembic revisions (:mod:`cds_hooks.migrations`), run when a store
opens; :data:`metadata` mirrors the newest revision (a test checks they agree).

A database that cannot be reached when the store opens does not stop the service: the store logs it,
hook calls go on, and every use of the store (``/readyz``, feedback) tries again, migrations first,
raising :class:`DatabaseUnavailable` until the database answers (``/readyz`` then says 503, feedback
is refused with 503, issued-card records are dropped and counted). ``issued_cards`` records
which cards were shown, written in batches by :mod:`cds_hooks.issued_cards`, so that reports can join
feedback to a card's topic.

What a column cannot hold is refused before anything is written (:meth:`FeedbackStore.check`), the same on
every engine: a string longer than its column (PostgreSQL refuses it, SQLite would store it) or holding a
NUL character (PostgreSQL cannot store one) is a 400 naming the field, never a database error.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from .errors import InvalidRequest

log = logging.getLogger("cds_hooks.feedback_store")

metadata = sa.MetaData()


class DatabaseUnavailable(RuntimeError):
    """The feedback database cannot be reached (or its schema could not be brought up to date) right now."""


#: errors that mean "the database is not answering", as opposed to a bug or a constraint
_UNREACHABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)

feedback_table = sa.Table(
    "card_feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("service_id", sa.String(200), nullable=False),
    sa.Column("card_uuid", sa.String(200), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("outcome_timestamp", sa.String(40), nullable=False),
    # '' when unsigned (sandbox): NULLs would defeat the unique constraint
    sa.Column("client_iss", sa.String(500), nullable=False, server_default=""),
    sa.Column("tenant", sa.String(200), nullable=True),
    sa.Column("accepted_suggestions", sa.Text, nullable=True),
    sa.Column("override_reason_system", sa.String(500), nullable=True),
    sa.Column("override_reason_code", sa.String(200), nullable=True),
    sa.Column("override_reason_display", sa.String(500), nullable=True),
    sa.Column("user_comment", sa.Text, nullable=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("service_id", "card_uuid", "outcome", "outcome_timestamp", "client_iss",
                        name="uq_card_feedback_item"),
    sa.Index("ix_card_feedback_card_uuid", "card_uuid"),
)

issued_cards_table = sa.Table(
    "issued_cards",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("card_uuid", sa.String(200), nullable=False),
    sa.Column("service_id", sa.String(200), nullable=False),
    sa.Column("hook", sa.String(200), nullable=False),
    sa.Column("topic_code", sa.String(200), nullable=False, server_default=""),  # '' when the card has none
    sa.Column("indicator", sa.String(20), nullable=False),
    sa.Column("issued_on", sa.Date, nullable=False),  # UTC day: enough for trends, less to identify a visit
    sa.Index("ix_issued_cards_card_uuid", "card_uuid"),
    sa.Index("ix_issued_cards_topic_day", "topic_code", "issued_on"),
)


#: column -> the longest string it holds (String(n) columns of the feedback table)
_COLUMN_LENGTHS = {column.name: column.type.length for column in feedback_table.columns
                   if isinstance(column.type, sa.String) and column.type.length is not None}
#: column -> the feedback field it stores, for error messages
_FIELD_OF_COLUMN = {
    "card_uuid": "card", "outcome": "outcome", "outcome_timestamp": "outcomeTimestamp",
    "accepted_suggestions": "acceptedSuggestions", "override_reason_system": "overrideReason.reason.system",
    "override_reason_code": "overrideReason.reason.code", "override_reason_display": "overrideReason.reason.display",
    "user_comment": "overrideReason.userComment",
}
#: columns filled from the client's JWT, not from the body
_CLAIM_OF_COLUMN = {"client_iss": "the client's iss claim", "tenant": "the client's tenant claim"}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # durable before we answer 200
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA cache_size=-512")  # per pooled connection: 512 KB, not the default 2 MB
    cursor.close()


class FeedbackStore:
    """Writes and reads card feedback. Thread-safe; one instance per app (a pooled engine)."""

    def __init__(self, url: str, *, require_database: bool = False):
        """:param require_database: raise :class:`DatabaseUnavailable` when the database does not answer now
            (a report), instead of starting without it (the service)."""
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite" and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {"pool_pre_ping": True}
        if self.dialect == "sqlite" and parsed.database in (None, "", ":memory:"):
            # One shared connection: otherwise each thread (the issued-cards writer) sees its own empty DB.
            options.update(poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False})
        elif self.dialect == "postgresql" and parsed.get_driver_name() in ("psycopg", "psycopg2"):
            # An unreachable database must fail a request (and /readyz) fast, not hang a worker thread.
            options["connect_args"] = {"connect_timeout": 5}
        self.engine = sa.create_engine(url, **options)
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._migrated = False
        self._migrate_lock = threading.Lock()
        try:
            self._ensure_schema()
        except DatabaseUnavailable as exc:
            if require_database:
                raise
            log.warning("feedback database unreachable at start (%s): the service runs without it; /readyz "
                        "answers 503 and feedback is refused (503) until it answers", exc)

    def _ensure_schema(self) -> None:
        """Run the migrations once; :class:`DatabaseUnavailable` while the database does not answer."""
        if self._migrated:
            return
        with self._migrate_lock:
            if self._migrated:
                return
            from .migrations import upgrade

            try:
                upgrade(self.engine)
            except _UNREACHABLE as exc:
                raise DatabaseUnavailable(_why(exc)) from None
            self._migrated = True
            log.debug("feedback database schema is up to date")

    def connection(self, begin: bool = False) -> Any:
        """A connection (a transaction when ``begin``) once the schema is ready; :class:`DatabaseUnavailable`
        when the database does not answer."""
        self._ensure_schema()
        return _Guarded(self.engine.begin() if begin else self.engine.connect())

    def record(self, service_id: str, items: Iterable[Mapping[str, Any]], client_iss: str | None = None,
               tenant: str | None = None) -> int:
        """Store validated feedback items in one transaction.

        :raises InvalidRequest: a value the table cannot hold (:meth:`check`); nothing is written then.
        :return: how many were new (duplicates are ignored, FB-5).
        """
        now = datetime.now(UTC)
        rows = [self._row(service_id, item, client_iss or "", tenant, now) for item in items]
        self.check(rows)
        if not rows:
            return 0
        with self.connection(begin=True) as connection:
            statement = self._insert_ignoring_duplicates()
            if statement is not None:
                # RETURNING, not rowcount: executemany drivers (psycopg) do not report a usable rowcount.
                return len(connection.execute(statement.returning(feedback_table.c.id), rows).all())
            new = 0
            for row in rows:  # engines without ON CONFLICT: one savepoint per row
                try:
                    with connection.begin_nested():
                        connection.execute(feedback_table.insert(), row)
                    new += 1
                except sa.exc.IntegrityError:
                    pass
            return new

    @staticmethod
    def check(rows: Iterable[Mapping[str, Any]]) -> None:
        """Refuse (400) any row holding a string its column cannot hold: longer than the column, or with a
        NUL character. The message names the feedback field (or the token claim), never its value."""
        for index, row in enumerate(rows):
            for name, value in row.items():
                if not isinstance(value, str):
                    continue
                length = _COLUMN_LENGTHS.get(name)
                field = _FIELD_OF_COLUMN.get(name)
                where = f"feedback[{index}].{field}" if field else _CLAIM_OF_COLUMN.get(name, name)
                expression = [where] if field else None  # a token claim is not a field of the body
                if length is not None and len(value) > length:
                    raise InvalidRequest(f"{where} is longer than {length} characters", expression=expression)
                if "\x00" in value:
                    raise InvalidRequest(f"{where} contains a NUL character", expression=expression)

    def _insert_ignoring_duplicates(self) -> Any:
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            return None
        return insert(feedback_table).on_conflict_do_nothing()

    @staticmethod
    def _row(service_id: str, item: Mapping[str, Any], client_iss: str, tenant: str | None,
             now: datetime) -> dict[str, Any]:
        reason = item.get("overrideReason") or {}
        coding = reason.get("reason") or {}
        accepted = item.get("acceptedSuggestions")
        return {
            "service_id": service_id,
            "card_uuid": item["card"],
            "outcome": item["outcome"],
            "outcome_timestamp": item["outcomeTimestamp"],
            "client_iss": client_iss,
            "tenant": tenant,
            "accepted_suggestions": json.dumps([s["id"] for s in accepted]) if accepted else None,
            "override_reason_system": coding.get("system"),
            "override_reason_code": coding.get("code"),
            "override_reason_display": coding.get("display"),
            "user_comment": reason.get("userComment"),
            "received_at": now,
        }

    def record_issued(self, rows: list[Mapping[str, Any]]) -> None:
        """Store a batch of issued-card rows (``issued_cards`` columns except ``id``) in one transaction."""
        if rows:
            with self.connection(begin=True) as connection:
                connection.execute(issued_cards_table.insert(), list(rows))

    def topics_of(self, service_id: str, card_uuids: Iterable[str]) -> dict[str, str]:
        """card uuid -> topic code, for cards of ``service_id`` recorded as issued."""
        uuids = sorted(set(card_uuids))
        if not uuids:
            return {}
        table = issued_cards_table
        with self.connection() as connection:
            rows = connection.execute(sa.select(table.c.card_uuid, table.c.topic_code).distinct().where(
                table.c.service_id == service_id, table.c.card_uuid.in_(uuids)))
            return {row.card_uuid: row.topic_code for row in rows}

    def all(self) -> list[dict[str, Any]]:
        with self.connection() as connection:
            result = connection.execute(sa.select(feedback_table).order_by(feedback_table.c.id))
            return [dict(row._mapping) for row in result]

    def ping(self) -> None:
        """Raises :class:`DatabaseUnavailable` unless the database answers (and its schema is ready)."""
        with self.connection() as connection:
            connection.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def _why(error: Exception) -> str:
    """The driver's exception name (never its message, which can hold a host name or a URL)."""
    return type(getattr(error, "orig", None) or error).__name__


class _Guarded:
    """A connection context manager whose "database does not answer" errors, on connecting or while in
    use, become :class:`DatabaseUnavailable`."""

    def __init__(self, context: Any):
        self._context = context

    def __enter__(self) -> Any:
        try:
            return self._context.__enter__()
        except _UNREACHABLE as exc:
            raise DatabaseUnavailable(_why(exc)) from None

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> Any:
        try:
            handled = self._context.__exit__(kind, error, traceback)
        except _UNREACHABLE as exc:
            raise DatabaseUnavailable(_why(exc)) from None
        if isinstance(error, _UNREACHABLE):
            raise DatabaseUnavailable(_why(error)) from None
        return handled
