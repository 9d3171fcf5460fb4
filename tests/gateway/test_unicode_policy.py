"""Issue 14: the Unicode policy of `services/gateway/text.py`, through the public API on the real services.

Ticket codes are one ticket whatever their Unicode form or case (NFKC + casefold key: at enrolment, at the gate,
in imports); names are stored NFC; bidi controls and zero-width characters are refused in names and codes
everywhere, and nothing is stored.
"""

from __future__ import annotations

import unicodedata
import uuid
from typing import Any

import pytest

from tests.gateway.conftest import Faces, Tenant, enrol, verify, zip_archive

RLO, ZWSP, ZWJ, LRI, BOM = "\u202e", "\u200b", "\u200d", "\u2066", "\ufeff"


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


async def _count(t: Tenant) -> int:
    return len((await t.org.get(f"/v1/events/{t.event_id}/attendees", params={"limit": 500})).json()["items"])


async def test_one_ticket_whatever_its_form_or_case(new_tenant: Any, faces: Faces, unthrottled: None) -> None:
    t = await new_tenant()
    tag = uuid.uuid4().hex[:6].upper()
    code = f"JOSÉ-{tag}"  # composed É
    r = await enrol(t.org, t.event_id, name=nfd("José Núñez"), ticket=code, photos=[faces.photo("Colin_Powell", 1)])
    assert r.status_code == 201, r.text
    stored = r.json()["attendee"]
    assert stored["name"] == unicodedata.normalize("NFC", "José Núñez")  # NFC, as typed
    assert stored["ticket_code"] == code
    for same in (nfd(code), code.lower(), fullwidth(code), f"  {code.casefold()}  "):
        r = await enrol(t.org, t.event_id, name="Impostor", ticket=same, photos=[faces.photo("Kit_Harington", 1)])
        assert (r.status_code, r.json()["code"]) == (409, "ticket_exists"), (same, r.text)
    assert await _count(t) == 1
    # at the gate: the holder admitted on any spelling of the code (first admit, then already_entered)
    r = await verify(t.gate, nfd(code).lower(), faces.photo("Colin_Powell", 2))
    assert (r.status_code, r.json()["decision"]) == (200, "admit"), r.text
    r = await verify(t.gate, fullwidth(code), faces.photo("Colin_Powell", 2))
    assert (r.status_code, r.json()["reason"]) == (200, "already_entered"), r.text
    # a fullwidth code is stored in its NFKC form
    r = await enrol(
        t.org, t.event_id, name="Wide", ticket=fullwidth(f"W-{tag}"), photos=[faces.photo("Kit_Harington", 1)]
    )
    assert r.status_code == 201 and r.json()["attendee"]["ticket_code"] == f"W-{tag}", r.text


HIDDEN = {
    "right-to-left override": f"Ada{RLO}ecalevoL",
    "zero-width space": f"TCK{ZWSP}-1",
    "zero-width joiner": f"A{ZWJ}da",
    "isolate": f"{LRI}Ada",
    "byte order mark": f"{BOM}Ada",
}


@pytest.mark.parametrize("kind", sorted(HIDDEN))
async def test_bidi_and_invisible_characters_are_refused_everywhere(
    kind: str, new_tenant: Any, faces: Faces, unthrottled: None
) -> None:
    t = await new_tenant()
    hidden = HIDDEN[kind]
    photo = faces.photo("Colin_Powell", 1)
    r = await enrol(t.org, t.event_id, name=hidden, ticket="OK-1", photos=[photo])
    assert (r.status_code, r.json()["code"]) == (400, "invalid_text"), r.text
    r = await enrol(t.org, t.event_id, name="Ada", ticket=hidden, photos=[photo])
    assert (r.status_code, r.json()["code"]) == (400, "invalid_text"), r.text
    assert await _count(t) == 0
    r = await t.org.post("/v1/events", json={"name": hidden})
    assert r.status_code == 422, r.text
    r = await t.org.post("/v1/keys", json={"name": hidden, "role": "gate", "event_id": t.event_id})
    assert r.status_code == 422, r.text
    r = await verify(t.gate, hidden, faces.photo("Colin_Powell", 2))
    assert (r.status_code, r.json()["code"]) == (400, "invalid_text"), r.text  # not a decision
    csv = f"name,ticket_code,photos\n{hidden},IMP-1,a.jpg\nBob,{hidden},a.jpg\n"
    r = await t.org.post(
        f"/v1/events/{t.event_id}/imports",
        files={
            "csv": ("a.csv", csv.encode(), "text/csv"),
            "photos": ("p.zip", zip_archive({"a.jpg": photo[1]}), "application/zip"),
        },
    )
    assert (r.status_code, r.json()["code"]) == (422, "invalid_import"), r.text
    assert {p["row"] for p in r.json()["errors"]} == {1, 2}, r.json()
    assert await _count(t) == 0


async def test_an_import_sees_case_and_form_duplicates(new_tenant: Any, faces: Faces) -> None:
    t = await new_tenant()
    photo = faces.photo("Colin_Powell", 1)[1]
    csv = f"name,ticket_code,photos\nA,DUP-1,a.jpg\nB,{fullwidth('dup-1')},a.jpg\n"
    r = await t.org.post(
        f"/v1/events/{t.event_id}/imports",
        files={
            "csv": ("a.csv", csv.encode(), "text/csv"),
            "photos": ("p.zip", zip_archive({"a.jpg": photo}), "application/zip"),
        },
    )
    assert (r.status_code, r.json()["code"]) == (422, "invalid_import"), r.text
    assert [p["row"] for p in r.json()["errors"]] == [2], r.json()
