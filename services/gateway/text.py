"""Unicode policy for what people type: names and ticket codes.

- **Refused** everywhere (400 `invalid_text`, or a listed row in an import): control characters, and bidi
  overrides/isolates/marks and zero-width or invisible characters (`schemas.CONTROL_CHARS`). A right-to-left
  override makes "Ada" on the console read as another name; a zero-width space makes two codes that look the same
  differ.
- **Names** (attendee name, external reference) are stored NFC-normalised: the composed and decomposed spellings
  of "José" are one name, shown as typed.
- **Ticket codes** are identifiers, not prose: stored NFKC-normalised (fullwidth "TCK-1" becomes "TCK-1", a
  composed and a decomposed "é" are one letter), case preserved for display, and compared by their **key**,
  `NFKC(casefold(NFKC(code)))` (Unicode's NFKC_Casefold, without its removal of ignorables, which are refused):
  "TCK-0001", "tck-0001" and its fullwidth form are the same ticket, both at enrolment (409 `ticket_exists`) and at the
  gate. Unique per event on the key (`attendees.ticket_key`, migration 0005).
"""

from __future__ import annotations

import unicodedata

MAX_CHARS = 200


def normalise_name(value: str) -> str:
    return unicodedata.normalize("NFC", value)


def normalise_ticket(value: str) -> str:
    return unicodedata.normalize("NFKC", value).strip()


def ticket_key(value: str) -> str:
    """What two ticket codes must share to be the same ticket."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold()).strip()
