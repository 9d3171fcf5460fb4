"""The API pieces the web console draws on: face boxes and landmarks in an enrolment rejection, attendee
search; and the pages themselves as static files of the installed package (what a non-editable install ships)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx

from services.gateway.api.web import WEB_DIR
from tests.conftest import REPO
from tests.gateway.conftest import Faces, enrol


async def test_rejection_carries_boxes_and_landmarks_in_image_pixels(new_tenant, faces: Faces) -> None:
    t = await new_tenant()
    photos = [faces.photo("Colin_Powell", 1), faces.other("noface", 1), faces.other("group", 3)]
    r = await enrol(t.org, t.event_id, name="Colin", ticket="W-1", photos=photos)
    assert r.status_code == 422, r.text
    reports = {e["index"]: e for e in r.json()["errors"]}
    assert reports[1]["detections"] == [] and reports[1]["image_width"] == 640
    two = reports[2]
    assert two["faces"] == len(two["detections"]) == 2
    for report in (reports[0], two):
        for face in report["detections"]:
            box = face["box"]
            assert box["x"] >= 0 and box["x"] + box["width"] <= report["image_width"] + 1
            assert box["y"] >= 0 and box["y"] + box["height"] <= report["image_height"] + 1
            for x, y in face["landmarks"].values():  # every landmark inside its own box
                assert box["x"] <= x <= box["x"] + box["width"] and box["y"] <= y <= box["y"] + box["height"]
    assert reports[0]["passed"] and reports[0]["detections"][0]["reasons"] == []


async def test_attendee_search(new_tenant, faces: Faces) -> None:
    t = await new_tenant()
    for name, ticket, who in [("Ada Lovelace", "S-100", "Colin_Powell"), ("Grace_Hopper", "S-200", "Madonna")]:
        r = await enrol(t.org, t.event_id, name=name, ticket=ticket, photos=[faces.photo(who, 2)])
        assert r.status_code == 201, r.text

    async def names(q: str) -> list[str]:
        r = await t.org.get(f"/v1/events/{t.event_id}/attendees", params={"q": q})
        assert r.status_code == 200, r.text
        return [a["name"] for a in r.json()["items"]]

    assert await names("lovelace") == ["Ada Lovelace"]  # case-insensitive substring of the name
    assert await names("s-2") == ["Grace_Hopper"]  # or of the ticket code
    assert await names("") == ["Ada Lovelace", "Grace_Hopper"]
    assert await names("%") == [] and await names("e_H") == ["Grace_Hopper"]  # LIKE wildcards are literal
    assert await names("  ") == ["Ada Lovelace", "Grace_Hopper"]
    r = await t.org.get(f"/v1/events/{t.event_id}/attendees", params={"q": "a\x00b"})
    assert r.status_code == 422, r.text


async def test_pages_and_assets(gateway) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway.app), base_url="http://gw") as c:
        for path, kind in [("/", "text/html"), ("/kiosk", "text/html"), ("/web/kiosk.js", "text/javascript")]:
            r = await c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind), path
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        for path in ["/web/../app.py", "/web/%2e%2e%2fapp.py", "/web/web.py", "/web/"]:
            assert (await c.get(path)).status_code == 404, path


def test_a_wheel_ships_the_pages(tmp_path: Path) -> None:
    """A non-editable install gets the pages: they are package data of services.gateway. (Built from a copy of
    the sources, so no build/ folder lands in the checkout.)"""
    src = tmp_path / "src"
    shutil.copytree(REPO / "services", src / "services", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(src),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("facegate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in WEB_DIR.iterdir():
        assert f"services/gateway/web/{asset.name}" in names, asset.name
