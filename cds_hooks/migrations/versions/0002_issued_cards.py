"""issued_cards: which cards were shown (service, hook, topic, indicator, UTC day), for feedback reports.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "issued_cards",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("card_uuid", sa.String(200), nullable=False),
        sa.Column("service_id", sa.String(200), nullable=False),
        sa.Column("hook", sa.String(200), nullable=False),
        sa.Column("topic_code", sa.String(200), nullable=False, server_default=""),
        sa.Column("indicator", sa.String(20), nullable=False),
        sa.Column("issued_on", sa.Date, nullable=False),
    )
    op.create_index("ix_issued_cards_card_uuid", "issued_cards", ["card_uuid"])
    op.create_index("ix_issued_cards_topic_day", "issued_cards", ["topic_code", "issued_on"])
    # feedback joins to issued cards by (service, card uuid)
    op.create_index("ix_card_feedback_card_uuid", "card_feedback", ["card_uuid"])


def downgrade() -> None:
    op.drop_index("ix_card_feedback_card_uuid", table_name="card_feedback")
    op.drop_table("issued_cards")
