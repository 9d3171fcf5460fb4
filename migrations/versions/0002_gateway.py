"""gateway tables: api_keys, events, attendees, access_log, idempotency_keys, import_jobs

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE events (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            created_by uuid NOT NULL,
            name varchar(200) NOT NULL,
            starts_at timestamptz,
            ends_at timestamptz,
            mode varchar(16) NOT NULL CHECK (mode IN ('verify', 'identify', 'both')),
            allow_reentry boolean NOT NULL DEFAULT false,
            model_id varchar(64) NOT NULL,
            verify_threshold double precision,
            identify_threshold double precision,
            identify_margin double precision NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX events_tenant_idx ON events (tenant_id, created_at)")
    op.execute(
        """
        CREATE TABLE api_keys (
            id uuid PRIMARY KEY,
            name varchar(200) NOT NULL,
            prefix varchar(16) NOT NULL,
            key_hash varchar(64) NOT NULL UNIQUE,
            role varchar(16) NOT NULL CHECK (role IN ('admin', 'organiser', 'gate')),
            tenant_id uuid,
            event_id uuid REFERENCES events (id) ON DELETE CASCADE,
            created_by uuid,
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz,
            CHECK ((role = 'gate') = (event_id IS NOT NULL)),
            CHECK ((role = 'admin') = (tenant_id IS NULL))
        )
        """
    )
    op.execute("CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id)")
    op.execute(
        """
        CREATE TABLE attendees (
            id uuid PRIMARY KEY,
            event_id uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
            name varchar(200) NOT NULL,
            ticket_code varchar(200) NOT NULL,
            external_ref varchar(200),
            templates integer NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz,
            entered_at timestamptz,
            last_entry_at timestamptz,
            entries integer NOT NULL DEFAULT 0,
            CONSTRAINT attendees_event_ticket_key UNIQUE (event_id, ticket_code)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE access_log (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT now(),
            event_id uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
            gate_key_id uuid,
            mode varchar(16) NOT NULL,
            ticket_code varchar(200),
            attendee_id uuid REFERENCES attendees (id) ON DELETE SET NULL,
            decision varchar(16) NOT NULL,
            reason varchar(32),
            distance double precision,
            threshold double precision,
            model_id varchar(64) NOT NULL,
            latency_ms double precision NOT NULL,
            request_id varchar(128)
        )
        """
    )
    op.execute("CREATE INDEX access_log_event_idx ON access_log (event_id, id DESC)")
    op.execute("CREATE INDEX access_log_attendee_idx ON access_log (attendee_id) WHERE attendee_id IS NOT NULL")
    op.execute(
        """
        CREATE TABLE idempotency_keys (
            api_key_id uuid NOT NULL,
            key varchar(200) NOT NULL,
            fingerprint varchar(64) NOT NULL,
            event_id uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
            attendee_id uuid REFERENCES attendees (id) ON DELETE CASCADE,
            status_code integer NOT NULL,
            response jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (api_key_id, key)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE import_jobs (
            id uuid PRIMARY KEY,
            event_id uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
            created_by uuid NOT NULL,
            status varchar(16) NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
            total integer NOT NULL DEFAULT 0,
            succeeded integer NOT NULL DEFAULT 0,
            failed integer NOT NULL DEFAULT 0,
            results jsonb NOT NULL DEFAULT '[]'::jsonb,
            error text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz
        )
        """
    )
    op.execute("CREATE INDEX import_jobs_event_idx ON import_jobs (event_id, created_at DESC)")
    op.execute("CREATE INDEX access_log_event_at_idx ON access_log (event_id, at)")


def downgrade() -> None:
    for table in ("import_jobs", "idempotency_keys", "access_log", "attendees", "api_keys", "events"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
