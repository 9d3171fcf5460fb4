"""Matcher: a change version per gallery, stamped on templates and on tombstones of deleted templates.

Revision ID: 0003
Revises: 0002

The matcher keeps large galleries resident in memory (an hnswlib graph) to answer searches in well under a
millisecond, with Postgres as the truth. Each search reads the gallery's `version` in its one round trip and
uses the in-memory copy only if it is at that version; a stale copy catches up from the rows and tombstones
stamped with a later version. Writers take the next version under the gallery row's lock, taken first in their
transaction, so a gallery's versions follow commit order and "version > v" is exactly what changed since v.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One sequence for every gallery, so a version is never reused, not even by a gallery dropped and created
    # again under the same event id: a copy of the old gallery can never pass for the new one.
    op.execute("CREATE SEQUENCE matcher_versions")
    op.execute("ALTER TABLE matcher_galleries ADD COLUMN version bigint NOT NULL DEFAULT nextval('matcher_versions')")
    # A constant default is a catalogue-only change, for existing partitions too.
    op.execute("ALTER TABLE face_templates ADD COLUMN version bigint NOT NULL DEFAULT 0")
    op.execute("CREATE INDEX face_templates_version_idx ON face_templates (event_id, version)")
    op.execute(
        """
        CREATE TABLE matcher_tombstones (
            event_id     uuid NOT NULL,
            version      bigint NOT NULL,
            template_id  uuid NOT NULL,  -- an id only: nothing of the person it belonged to
            PRIMARY KEY (event_id, version, template_id)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS matcher_tombstones")
    op.execute("DROP INDEX IF EXISTS face_templates_version_idx")
    op.execute("ALTER TABLE face_templates DROP COLUMN IF EXISTS version")
    op.execute("ALTER TABLE matcher_galleries DROP COLUMN IF EXISTS version")
    op.execute("DROP SEQUENCE IF EXISTS matcher_versions")
