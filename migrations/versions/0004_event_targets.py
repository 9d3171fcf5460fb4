"""Events ask for error rates (target_fpir, target_fmr); galleries count their attendees.

Revision ID: 0004
Revises: 0003

Thresholds are derived from these targets and the gallery's size through the model's calibration
(`services/gateway/thresholds.py`); the distance columns stay as bounded expert overrides. A NULL margin means
the model's calibrated margin; existing events keep the margin they had. The matcher keeps each gallery's
attendee count beside its template count (both published with the version under the gallery's lock), since a
1:K threshold depends on both and every search reports them.
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
    op.execute("ALTER TABLE matcher_galleries ADD COLUMN attendees integer NOT NULL DEFAULT 0")
    op.execute(
        "UPDATE matcher_galleries g SET attendees ="
        " (SELECT count(DISTINCT attendee_id) FROM face_templates t WHERE t.event_id = g.event_id)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE matcher_galleries DROP COLUMN attendees")
    op.execute("UPDATE events SET identify_margin = 0 WHERE identify_margin IS NULL")
    op.execute(
        "ALTER TABLE events DROP COLUMN target_fpir, DROP COLUMN target_fmr,"
        " ALTER COLUMN identify_margin SET DEFAULT 0, ALTER COLUMN identify_margin SET NOT NULL"
    )
