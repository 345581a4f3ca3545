"""alembic environment: runs the revisions in ``versions/`` on the connection :func:`upgrade` hands over
(or on ``sqlalchemy.url`` when alembic is driven directly)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from cds_hooks.feedback_store import metadata

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata,
                      # SQLite cannot ALTER most things: later revisions use batch mode there.
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()
elif (given := config.attributes.get("connection")) is not None:
    _run(given)
else:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"), poolclass=sa.pool.NullPool)
    with engine.connect() as own:
        _run(own)
