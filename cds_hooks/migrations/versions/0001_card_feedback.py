"""card_feedback: one row per feedback item (CDS Hooks "Feedback"), unique per item for idempotence.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "card_feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("service_id", sa.String(200), nullable=False),
        sa.Column("card_uuid", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("outcome_timestamp", sa.String(40), nullable=False),
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
    )


def downgrade() -> None:
    op.drop_table("card_feedback")
