"""Matcher: gallery registry and the face templates table, LIST-partitioned by event.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Owned by the matcher. Each event's gallery is one partition of `face_templates`, created at run time by the
matcher (`face_templates_e<uuid hex>`) together with its own HNSW index, so tenancy is physical and erasing an
event is a DROP of its partition. The parent's `embedding` column is an untyped `vector` because events use
models of different dimensions; each partition pins its dimension with a CHECK and indexes the expression
`(embedding::vector(<dim>))`, which the matcher's queries repeat so the planner can match the index.
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute(
        """
        CREATE TABLE matcher_galleries (
            event_id    uuid PRIMARY KEY,
            model_id    text NOT NULL,
            dim         integer NOT NULL CHECK (dim > 0 AND dim <= 2000),
            -- kept in step with inserts/deletes in the same transaction: a search reads it to choose
            -- exact or HNSW without a count(*) over a large partition
            templates   bigint NOT NULL DEFAULT 0 CHECK (templates >= 0),
            created_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE face_templates (
            id           uuid NOT NULL,
            -- No foreign key to matcher_galleries on purpose: it puts RI triggers on the registry, so every
            -- partition creation takes SHARE ROW EXCLUSIVE on it, which blocks all writers' counter updates
            -- and deadlocked two concurrent ensures of one event. A partition only exists for a registered
            -- gallery, and both are created and dropped in one transaction.
            event_id     uuid NOT NULL,
            attendee_id  uuid NOT NULL,
            model_id     text NOT NULL,
            embedding    vector NOT NULL,
            quality      real,
            created_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (event_id, id)
        ) PARTITION BY LIST (event_id)
        """
    )
    # A 512-d vector is 2,056 bytes, just over the TOAST threshold: with the default (EXTENDED) storage every
    # embedding went out of line and an exact scan of 10k templates read 27 MB of TOAST, ~10x slower.
    # PLAIN keeps vectors in the heap page (fine up to the ~2,000 dims the dim CHECK allows); partitions
    # inherit the setting.
    op.execute("ALTER TABLE face_templates ALTER COLUMN embedding SET STORAGE PLAIN")
    # Propagates to every partition: per-attendee reads, deletes and 1:1 distance.
    op.execute("CREATE INDEX face_templates_attendee_idx ON face_templates (event_id, attendee_id)")


def downgrade() -> None:
    # Dropping the parent drops every event's partition with it.
    op.execute("DROP TABLE IF EXISTS face_templates")
    op.execute("DROP TABLE IF EXISTS matcher_galleries")
