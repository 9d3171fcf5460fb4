"""Bulk import: CSV + zip, checked up front, enrolled by a background job row by row."""

from __future__ import annotations

import asyncio

from tests.gateway.conftest import Faces, zip_archive


async def test_import_job_enrols_good_rows_and_reports_bad_ones(new_tenant, faces: Faces) -> None:
    t = await new_tenant()
    archive = zip_archive(
        {
            "kit.jpg": faces.photo("Kit_Harington", 1)[1],
            "B-2/1.jpg": faces.photo("Alex_Lacamoire", 1)[1],
            "empty-room.jpg": faces.other("noface")[1],
        }
    )
    csv = "name,ticket_code,external_ref,photos\nKit H,B-1,crm-1,kit.jpg\nAlex L,B-2,,\nNobody,B-3,,empty-room.jpg\n"
    r = await t.org.post(
        f"/v1/events/{t.event_id}/imports",
        files={"csv": ("a.csv", csv.encode(), "text/csv"), "photos": ("p.zip", archive, "application/zip")},
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["total"] == 3
    for _ in range(240):
        job = (await t.org.get(f"/v1/events/{t.event_id}/imports/{job['id']}")).json()
        if job["status"] in ("done", "failed"):
            break
        await asyncio.sleep(0.25)
    assert job["status"] == "done", job
    assert (job["succeeded"], job["failed"]) == (2, 1), job
    bad = next(x for x in job["results"] if x["ticket_code"] == "B-3")
    assert bad["code"] == "quality_rejected"
    listed = (await t.org.get(f"/v1/events/{t.event_id}/attendees")).json()["items"]
    assert sorted(a["ticket_code"] for a in listed) == ["B-1", "B-2"]
    assert next(a for a in listed if a["ticket_code"] == "B-1")["external_ref"] == "crm-1"


async def test_import_with_problems_is_refused_up_front(new_tenant) -> None:
    t = await new_tenant()
    csv = "name,ticket_code,photos\nA,C-1,missing.jpg\nB,C-1,x.jpg\n,C-3,x.jpg\n"
    r = await t.org.post(
        f"/v1/events/{t.event_id}/imports",
        files={
            "csv": ("a.csv", csv.encode(), "text/csv"),
            "photos": ("p.zip", zip_archive({"x.jpg": b"x"}), "application/zip"),
        },
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "invalid_import"
    assert {e["row"] for e in body["errors"]} == {1, 2, 3}
    r = await t.gate.post(
        f"/v1/events/{t.event_id}/imports",
        files={"csv": ("a.csv", b"name,ticket_code\n", "text/csv"), "photos": ("p.zip", b"", "application/zip")},
    )
    assert r.status_code == 403
