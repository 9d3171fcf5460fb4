"""Gateway: ticket codes compared by their NFKC + casefold key (issue 14).

Revision ID: 0005
Revises: 0004

"TCK-0001", "tck-0001", its fullwidth form and an NFD spelling of a code are one ticket
(services/gateway/text.py). Existing rows get their key computed here, in Python, with the very function the
gateway uses; if two existing tickets of one event share a key the migration stops and names them (an organiser
must decide which stays), rather than pick one silently.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _key(value: str) -> str:
    import unicodedata

    # a copy of services.gateway.text.ticket_key: a migration must not change when the code does
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold()).strip()


def upgrade() -> None:
    op.add_column("attendees", sa.Column("ticket_key", sa.String(400), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, event_id, ticket_code FROM attendees")).fetchall()
    seen: dict[tuple[str, str], str] = {}
    clashes: list[str] = []
    for attendee_id, event_id, code in rows:
        key = _key(code)
        if (str(event_id), key) in seen:
            clashes.append(f"event {event_id}: {seen[(str(event_id), key)]!r} and {code!r}")
        seen[(str(event_id), key)] = code
        conn.execute(sa.text("UPDATE attendees SET ticket_key = :k WHERE id = :id"), {"k": key, "id": attendee_id})
    if clashes:
        raise RuntimeError("ticket codes that differ only by case or Unicode form: " + "; ".join(clashes[:20]))
    op.alter_column("attendees", "ticket_key", nullable=False)
    op.create_unique_constraint("attendees_event_ticket_fold_key", "attendees", ["event_id", "ticket_key"])


def downgrade() -> None:
    op.drop_constraint("attendees_event_ticket_fold_key", "attendees", type_="unique")
    op.drop_column("attendees", "ticket_key")
