"""Gateway: the head-turn challenge (issue 17): an event's liveness setting, single-use challenges, and the
liveness outcome of each decision in the access log.

Revision ID: 0006
Revises: 0005

A challenge row is redeemed by one conditional UPDATE (unused, unexpired, this event, this gate key), so two
requests with one nonce cannot both pass, and a fault in between leaves it used rather than reusable. Times are
the database's (`now()`), so gateway replicas with skewed clocks agree on expiry. Rows are deleted with their
event or gate key, and expired ones by the next issuance to the same key.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE events ADD COLUMN liveness varchar(16) NOT NULL DEFAULT 'off'"
        " CHECK (liveness IN ('off', 'challenge'))"
    )
    op.execute("ALTER TABLE access_log ADD COLUMN liveness varchar(32)")
    op.execute(
        "CREATE TABLE gate_challenges ("
        " nonce varchar(64) PRIMARY KEY,"
        " event_id uuid NOT NULL REFERENCES events(id) ON DELETE CASCADE,"
        " gate_key_id uuid NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,"
        " direction varchar(8) NOT NULL CHECK (direction IN ('left', 'right')),"
        " issued_at timestamptz NOT NULL DEFAULT now(),"
        " expires_at timestamptz NOT NULL,"
        " used_at timestamptz)"
    )
    op.execute("CREATE INDEX gate_challenges_key_expiry ON gate_challenges (gate_key_id, expires_at)")
    op.execute("CREATE INDEX gate_challenges_event ON gate_challenges (event_id)")


def downgrade() -> None:
    op.execute("DROP TABLE gate_challenges")
    op.execute("ALTER TABLE access_log DROP COLUMN liveness")
    op.execute("ALTER TABLE events DROP COLUMN liveness")
