"""Gateway: events ask for error rates (target_fpir, target_fmr); the margin defaults to the calibrated one.

Revision ID: 0004
Revises: 0003

Thresholds are derived from these targets and the gallery's size through the model's calibration
(`services/gateway/thresholds.py`); the distance columns stay as bounded expert overrides. A NULL margin means
the model's calibrated margin; existing events keep the margin they had.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE events"
        " ADD COLUMN target_fpir double precision NOT NULL DEFAULT 0.003"
        " CHECK (target_fpir > 0 AND target_fpir <= 0.05),"
        " ADD COLUMN target_fmr double precision NOT NULL DEFAULT 0.001 CHECK (target_fmr > 0 AND target_fmr <= 0.01),"
        " ALTER COLUMN identify_margin DROP NOT NULL,"
        " ALTER COLUMN identify_margin DROP DEFAULT"
    )


def downgrade() -> None:
    op.execute("UPDATE events SET identify_margin = 0 WHERE identify_margin IS NULL")
    op.execute(
        "ALTER TABLE events DROP COLUMN target_fpir, DROP COLUMN target_fmr,"
        " ALTER COLUMN identify_margin SET DEFAULT 0, ALTER COLUMN identify_margin SET NOT NULL"
    )
