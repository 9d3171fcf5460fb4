"""The organiser console in real Chromium against the real stack: sign in, create an event and a gate key,
enrol through the form (file upload and camera snapshot), see a rejected photo's reasons with the faces drawn,
search, page, revoke, erase with a confirmation, bulk import with progress, and gate decisions appearing in
the live access log and counts."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.stack import Stack
from tests.browser.conftest import Site, make_y4m, new_site, watch
from tests.gateway.conftest import Faces

WAIT_MS = 60_000  # an enrolment embeds on 2 shared cores; the first one also warms the embedder up


@pytest.fixture(scope="module")
def site(stack: Stack, faces: Faces) -> Site:
    return new_site(stack, faces)


def signed_in(browser: Any, site: Site) -> Any:
    page = watch(browser.new_page(viewport={"width": 1280, "height": 1000}))
    page.goto(site.url + "/")
    page.get_by_label("API key (organiser)").fill(site.org_token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#app-view:not([hidden])")
    return page


def gate_post(site: Site, token: str, faces: Faces, path: str, frame: tuple[str, bytes, str]) -> dict[str, Any]:
    with httpx.Client(base_url=site.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as gate:
        r = gate.post(path, files={"frame": frame})
    assert r.status_code == 200, r.text
    return dict(r.json())


def attendees(site: Site, event_id: str) -> list[dict[str, Any]]:
    with site.client(site.org_token) as org:
        r = org.get(f"/v1/events/{event_id}/attendees", params={"limit": 500})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def test_console_enrol_reject_log_revoke_erase(
    site: Site, faces: Faces, launch: Callable[..., Any], shots: Callable[..., Path], tmp_path: Path
) -> None:
    page = signed_in(launch(), site)
    assert "Signed in as browser organiser" in page.locator("#who").inner_text()

    # a new event through the form becomes the current one
    page.locator("#event-create summary").click()
    page.get_by_label("Event name").fill("Console Arena")
    page.get_by_role("button", name="Create event").click()
    page.wait_for_function(
        "() => document.querySelector('#event-select option:checked').textContent.includes('Console')"
    )
    event_id = page.locator("#event-select").input_value()
    assert event_id != site.event_id

    # a gate key for it, shown once with the kiosk link
    page.get_by_role("button", name="New gate key for the kiosk").click()
    gate_token = page.locator("#gate-key-token").inner_text()
    assert gate_token.startswith("fg_")
    assert page.locator("#gate-key-link").get_attribute("href").endswith(f"/kiosk#key={gate_token}")

    # enrol through the form with two uploaded photos
    page.locator("#enrol-name").fill("Colin Powell")
    page.locator("#enrol-ticket").fill("C-001")
    page.locator("#enrol-photos").set_input_files([faces.path("Colin_Powell", 1), faces.path("Colin_Powell", 2)])
    page.get_by_role("button", name="Register").click()
    page.wait_for_function(
        "() => document.getElementById('enrol-status').textContent.startsWith('Registered')", timeout=WAIT_MS
    )
    assert "Registered Colin Powell (ticket C-001) with 2 photo(s)" in page.locator("#enrol-status").inner_text()
    page.wait_for_selector("#attendee-table tbody tr:has-text('Colin Powell')")
    assert [a["name"] for a in attendees(site, event_id)] == ["Colin Powell"]

    # a photo without a face and one with two faces: rejected, reasons in words, the faces drawn; nothing stored
    page.locator("#enrol-name").fill("Nobody")
    page.locator("#enrol-ticket").fill("C-002")
    page.locator("#enrol-photos").set_input_files(
        [faces.root / "noface" / "1.jpg", faces.root / "group" / "3.jpg", faces.path("Colin_Powell", 3)]
    )
    page.get_by_role("button", name="Register").click()
    page.wait_for_selector("#rejections figure", timeout=WAIT_MS)
    figures = page.locator("#rejections figure")
    assert figures.count() == 3
    assert "rejected" in figures.nth(0).inner_text() and "No face could be seen" in figures.nth(0).inner_text()
    assert figures.nth(0).locator("canvas").get_attribute("data-boxes") == "0"
    assert "More than one face in view" in figures.nth(1).inner_text()
    assert figures.nth(1).locator("canvas").get_attribute("data-boxes") == "2"
    # the boxes are really drawn: red pixels on the canvas's box outline
    red = (
        figures.nth(1)
        .locator("canvas")
        .evaluate(
            """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
                  for (let i = 0; i < d.length; i += 4) if (d[i] > 240 && d[i+1] < 80 && d[i+2] < 70) n++;
                  return n; }"""
        )
    )
    assert red > 50, red
    assert "accepted" in figures.nth(2).inner_text()
    assert "rejected" in page.locator("#enrol-status").inner_text()
    assert [a["name"] for a in attendees(site, event_id)] == ["Colin Powell"]
    shots(page, "console-rejected")

    # gate decisions appear in the live log (polling) and in the counts, by name
    admitted = gate_post(site, gate_token, faces, "/v1/gate/identify", faces.photo("Colin_Powell", 4))
    assert admitted["decision"] == "admit", admitted
    row = page.locator("#log-table tbody tr[data-decision='admit']")
    row.wait_for(timeout=10_000)
    assert "Colin Powell" in row.inner_text()
    stranger = gate_post(site, gate_token, faces, "/v1/gate/identify", faces.photo("Madonna", 1))
    assert stranger["decision"] == "unknown", stranger
    page.locator("#log-table tbody tr[data-decision='unknown']").wait_for(timeout=10_000)
    page.wait_for_function("() => document.querySelector('#count-admitted b').textContent === '1'", timeout=10_000)
    assert page.locator("#count-unknown b").inner_text() == "1"
    assert "Not recognised: 1" in page.locator("#counts").inner_text()
    # a filter keeps only what it names
    page.get_by_label("Decision").select_option("unknown")
    page.wait_for_function("() => !document.querySelector(\"#log-table tr[data-decision='admit']\")", timeout=10_000)
    assert page.locator("#log-table tbody tr[data-decision='unknown']").count() == 1
    page.get_by_label("Decision").select_option("")
    page.locator("#log-table tbody tr[data-decision='admit']").wait_for(timeout=10_000)
    page.evaluate("document.getElementById('gate-key-out').replaceChildren()")  # no key on a README picture
    shots(page, "console", readme=True, full_page=True)

    # revoke: the gates deny the ticket from then on, and the log says why in words
    page.get_by_role("button", name="Revoke the ticket of Colin Powell").click()
    page.wait_for_selector("#attendee-table tbody tr:has-text('revoked')")
    denied = gate_post(site, gate_token, faces, "/v1/gate/identify", faces.photo("Colin_Powell", 5))
    assert denied["decision"] == "deny" and denied["reason"] == "revoked", denied
    deny_row = page.locator("#log-table tbody tr[data-reason='revoked']")
    deny_row.wait_for(timeout=10_000)
    assert "This ticket has been revoked" in deny_row.inner_text()

    # erase asks first; cancel keeps the attendee, confirm erases
    page.get_by_role("button", name="Erase Colin Powell").click()
    dialog = page.locator("#erase-dialog")
    assert dialog.is_visible() and "Colin Powell, ticket C-001" in dialog.inner_text()
    # resolves once the dialog's own close handler (the one that would erase) has run
    page.evaluate(
        """() => { window.__closed = new Promise((done) => document.getElementById('erase-dialog')
                     .addEventListener('close', () => setTimeout(done, 0), { once: true })); }"""
    )
    dialog.get_by_role("button", name="Cancel").click()
    page.evaluate("() => window.__closed")
    assert not [f for f in page.evaluate("window.__fetches") if f.startswith("DELETE")], "cancel erased"
    assert dialog.is_hidden()
    assert [a["name"] for a in attendees(site, event_id)] == ["Colin Powell"]
    page.get_by_role("button", name="Erase Colin Powell").click()
    dialog.get_by_role("button", name="Erase").click()
    page.wait_for_function("() => document.getElementById('attendee-status').textContent.includes('was erased')")
    assert attendees(site, event_id) == []
    assert page.locator("#attendee-table tbody").inner_text().strip() == "No attendees yet."


def test_bulk_import_progress_search_and_pages(
    site: Site, faces: Faces, launch: Callable[..., Any], tmp_path: Path
) -> None:
    # 22 different people (one face, one ticket: a repeated face would be refused as a duplicate), each with a
    # photo that passes the enrol profile
    people = [
        ("Alex_Lacamoire", 1), ("Angelina_Jolie", 1), ("Ariel_Sharon", 1), ("Arnold_Schwarzenegger", 2),
        ("Barack_Obama", 1), ("Ben_Affleck", 2), ("Colin_Powell", 1), ("Donald_Rumsfeld", 1), ("Elton_John", 2),
        ("George_W_Bush", 1), ("Gerhard_Schroeder", 1), ("Hugo_Chavez", 1), ("Jacques_Chirac", 1),
        ("Jerry_Seinfeld", 1), ("Kit_Harington", 1), ("Madonna", 1), ("Mindy_Kaling", 1), ("Tony_Blair", 2),
        ("Vladimir_Putin", 1), ("deepface_p02", 1), ("deepface_p03", 1), ("deepface_p04", 1),
    ]  # fmt: skip
    rows, archive = ["name,ticket_code,photos"], io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for i, (person, n) in enumerate(people):
            z.writestr(f"p{i}.jpg", faces.path(person, n).read_bytes())
            rows.append(f"{person.replace('_', ' ')} {i},IMP-{i:03d},p{i}.jpg")
        z.writestr("nobody.jpg", (faces.root / "noface" / "2.jpg").read_bytes())
    rows.append("Nobody,IMP-BAD,nobody.jpg")
    (tmp_path / "people.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "photos.zip").write_bytes(archive.getvalue())

    page = signed_in(launch(), site)
    page.locator("#import-csv").set_input_files(tmp_path / "people.csv")
    page.locator("#import-zip").set_input_files(tmp_path / "photos.zip")
    page.get_by_role("button", name="Import").click()
    page.locator("#import-progress-box").wait_for()
    page.wait_for_function(
        "() => document.getElementById('import-count').textContent.endsWith(': done')", timeout=120_000
    )
    assert "23 of 23 rows (22 registered, 1 failed)" in page.locator("#import-count").inner_text()
    assert page.locator("#import-progress").evaluate("p => p.value === p.max")
    failure = page.locator("#import-failures li")
    assert (
        failure.count() == 1 and "IMP-BAD" in failure.inner_text() and "No face could be seen" in failure.inner_text()
    )

    # 22 attendees: page 1 holds 20, page 2 the rest
    page.wait_for_function("() => document.querySelectorAll('#attendee-table tbody tr').length === 20")
    assert page.locator("#page-info").inner_text() == "1-20"
    page.get_by_role("button", name="Next page").click()
    page.wait_for_function("() => document.getElementById('page-info').textContent === '21-22'")
    assert page.locator("#page-next").is_disabled()
    page.get_by_role("button", name="Previous page").click()
    page.wait_for_function("() => document.getElementById('page-info').textContent === '1-20'")
    # search by name (case-insensitive) and by ticket code
    page.get_by_label("Search name or ticket").fill("DEEPFACE")
    page.get_by_role("button", name="Search").click()
    page.wait_for_function("() => document.querySelectorAll('#attendee-table tbody tr').length === 3")
    assert all("deepface" in t for t in page.locator("#attendee-table tbody tr td:first-child").all_inner_texts())
    page.get_by_label("Search name or ticket").fill("IMP-013")
    page.get_by_role("button", name="Search").click()
    page.wait_for_function("() => document.querySelectorAll('#attendee-table tbody tr').length === 1")
    assert "Jerry Seinfeld 13" in page.locator("#attendee-table tbody").inner_text()


def test_enrol_from_a_camera_snapshot(faces: Faces, launch: Callable[..., Any], tmp_path: Path, stack: Stack) -> None:
    site = new_site(stack, faces)  # its own event: nobody else there to be identified
    camera = make_y4m(faces.path("George_W_Bush", 1), tmp_path / "bush.y4m")
    page = signed_in(launch(camera), site)
    page.get_by_role("button", name="Use the camera").click()
    page.wait_for_function("() => document.getElementById('camera-video').videoWidth > 0", timeout=15_000)
    page.get_by_role("button", name="Take snapshot").click()
    page.locator("#snapshots img").wait_for()
    page.locator("#enrol-name").fill("George W Bush")
    page.locator("#enrol-ticket").fill("SNAP-1")
    page.get_by_role("button", name="Register").click()
    page.wait_for_function(
        "() => !document.getElementById('enrol-status').textContent.startsWith('Checking')", timeout=WAIT_MS
    )
    status = page.locator("#enrol-status").inner_text()
    assert "Registered George W Bush (ticket SNAP-1) with 1 photo(s)" in status, (
        status,
        page.locator("#rejections").inner_text(),
    )
    # the snapshot is a usable template: another photo of him is admitted at the gate
    result = site.identify("George_W_Bush", 3)
    assert result["decision"] == "admit" and result["attendee_name"] == "George W Bush", result


def test_sign_in_refuses_bad_and_gate_keys(site: Site, launch: Callable[..., Any]) -> None:
    page = launch().new_page()
    page.goto(site.url + "/")
    page.get_by_label("API key (organiser)").fill("fg_not-a-key")
    page.get_by_label("API key (organiser)").press("Enter")
    page.wait_for_function("() => document.getElementById('signin-error').textContent !== ''")
    assert "not valid" in page.locator("#signin-error").inner_text()
    page.get_by_label("API key (organiser)").fill(site.gate_token)
    page.get_by_label("API key (organiser)").press("Enter")
    page.wait_for_function("() => document.getElementById('signin-error').textContent.includes('gate key')")
    assert page.locator("#app-view").is_hidden()


def test_console_shows_the_calibrated_rates_and_refuses_a_second_ticket_for_one_face(
    stack: Stack, faces: Faces, launch: Callable[..., Any]
) -> None:
    own = new_site(stack, faces, name="Rates Arena")  # an event of its own: faces here must not collide
    page = signed_in(launch(), own)
    page.wait_for_function("() => document.getElementById('rates-summary')?.textContent.includes('at 0 attendees')")
    assert "strangers admitted" in page.locator("#rates-summary").inner_text()
    assert "target 1 in 333 strangers" in page.locator("#event-rates").inner_text()

    def register(name: str, ticket: str, photo: Path) -> None:
        page.locator("#enrol-name").fill(name)
        page.locator("#enrol-ticket").fill(ticket)
        page.locator("#enrol-photos").set_input_files([photo])
        page.get_by_role("button", name="Register").click()

    register("Madonna", "R-001", faces.path("Madonna", 1))
    page.wait_for_function(
        "() => document.getElementById('enrol-status').textContent.startsWith('Registered')", timeout=WAIT_MS
    )
    page.wait_for_function("() => document.getElementById('rates-summary').textContent.includes('at 1 attendees')")
    # the same face under a second ticket: refused, naming the first attendee, with a way to insist
    register("Someone", "R-002", faces.path("Madonna", 2))
    page.wait_for_function(
        "() => document.getElementById('enrol-status').textContent.includes('already registered as Madonna')",
        timeout=WAIT_MS,
    )
    assert page.locator("#duplicate-box").is_visible()
    assert [a["ticket_code"] for a in attendees(own, own.event_id)] == ["R-001"]
    page.get_by_label("Register anyway").check()
    page.get_by_role("button", name="Register").click()
    page.wait_for_function(
        "() => document.getElementById('enrol-status').textContent.startsWith('Registered')", timeout=WAIT_MS
    )
    assert sorted(a["ticket_code"] for a in attendees(own, own.event_id)) == ["R-001", "R-002"]
    page.wait_for_function("() => document.getElementById('rates-summary').textContent.includes('at 2 attendees')")
