"""The gate kiosk in real Chromium with a fake camera showing a dev photo, against the real stack: an enrolled
person is admitted by name, a stranger is `unknown`, a typed ticket switches to 1:1, and the error states
(camera refused, gateway unreachable, gateway unavailable) are shown and recovered from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.stack import Stack
from tests.browser.conftest import Site, make_y4m, new_site, states, wait_ticks, watch
from tests.gateway.conftest import Faces

DECISION_TIMEOUT_MS = 60_000  # first frames pay for the embedder's warm-up on 2 shared cores
# Camera samples the kiosk takes (150 ms apart on a quick machine) while a test checks it does NOT send a frame:
# more than twice the steady samples it needs before sending one (kiosk.js STEADY_SAMPLES = 4).
QUIET_TICKS = 10


@pytest.fixture(scope="module")
def site(stack: Stack, faces: Faces) -> Site:
    s = new_site(stack, faces, allow_reentry=True)  # the same person may come through in several tests
    s.enrol("Tony Blair", "T-BLAIR", [("Tony_Blair", 2), ("Tony_Blair", 3)])
    return s


def kiosk(browser: Any, site: Site, key: str | None = None) -> Any:
    page = watch(browser.new_page(viewport={"width": 1024, "height": 768}))
    page.goto(f"{site.url}/kiosk#key={key or site.gate_token}")
    return page


def wait_state(page: Any, *states: str, timeout: int = DECISION_TIMEOUT_MS) -> str:
    page.wait_for_function("states => states.includes(document.body.dataset.state)", arg=list(states), timeout=timeout)
    return str(page.evaluate("document.body.dataset.state"))


def log_rows(site: Site) -> list[dict[str, Any]]:
    with site.client(site.org_token) as org:
        r = org.get(f"/v1/events/{site.event_id}/log", params={"limit": 100})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def test_enrolled_person_is_admitted_by_name(
    site: Site, faces: Faces, launch: Callable[..., Any], tmp_path: Path, shots: Callable[..., Path]
) -> None:
    camera = make_y4m(faces.path("Tony_Blair", 5), tmp_path / "blair.y4m")  # a photo not enrolled
    before = len(log_rows(site))
    page = kiosk(launch(camera), site)
    assert page.url.endswith("/kiosk"), "the key must leave the address bar"
    assert wait_state(page, "admit", "deny", "unknown") == "admit"
    result = page.locator("#result")
    assert result.get_attribute("data-decision") == "admit"
    assert "Welcome, Tony Blair" in result.inner_text()
    shots(page, "kiosk-admit", readme=True)
    # the decision is the gateway's: one identify row, admitted, for that attendee
    rows = log_rows(site)
    assert len(rows) == before + 1, "a still scene must be sent once, not over and over"
    assert rows[0]["decision"] == "admit" and rows[0]["mode"] == "identify"
    # it clears itself after a few seconds, and the same still scene is not decided (or logged) again
    assert wait_state(page, "ready", timeout=10_000) == "ready"
    assert page.locator("#result").is_hidden()
    seen = len(states(page))
    wait_ticks(page, QUIET_TICKS)  # the still scene sampled again and again: not "steadying", not "checking"
    assert states(page)[seen:] == [] and page.evaluate("document.body.dataset.state") == "ready", states(page)
    assert len(log_rows(site)) == before + 1


def test_stranger_is_unknown(
    site: Site, faces: Faces, launch: Callable[..., Any], tmp_path: Path, shots: Callable[..., Path]
) -> None:
    camera = make_y4m(faces.path("Madonna", 1), tmp_path / "stranger.y4m")
    page = kiosk(launch(camera), site)
    assert wait_state(page, "admit", "deny", "unknown") == "unknown"
    text = page.locator("#result").inner_text()
    assert "Not recognised" in text and "Madonna" not in text
    shots(page, "kiosk-unknown")
    assert log_rows(site)[0]["decision"] == "unknown"


def test_ticket_switches_to_one_to_one(site: Site, faces: Faces, launch: Callable[..., Any], tmp_path: Path) -> None:
    camera = make_y4m(faces.path("Tony_Blair", 4), tmp_path / "blair4.y4m")
    page = kiosk(launch(camera), site)
    wait_state(page, "admit", "deny", "unknown")
    wait_state(page, "ready", timeout=10_000)
    # someone else's ticket with this face: 1:1 says no
    other = site.enrol("Colin Powell", "T-POWELL", [("Colin_Powell", 1), ("Colin_Powell", 2)])
    page.fill("#ticket", other["ticket_code"])
    page.press("#ticket", "Enter")
    assert wait_state(page, "admit", "deny", "unknown") == "deny"
    assert page.locator("#result").get_attribute("data-reason") == "face_mismatch"
    assert "does not match" in page.locator("#result").inner_text()
    assert log_rows(site)[0]["mode"] == "verify"
    wait_state(page, "ready", timeout=10_000)
    # the holder's own ticket: admitted through 1:1
    page.fill("#ticket", "T-BLAIR")
    page.press("#ticket", "Enter")
    assert wait_state(page, "admit", "deny", "unknown") == "admit"
    row = log_rows(site)[0]
    assert row["mode"] == "verify" and row["ticket_code"] == "T-BLAIR" and row["decision"] == "admit"


def test_camera_refused(site: Site, launch: Callable[..., Any], faces: Faces, tmp_path: Path) -> None:
    camera = make_y4m(faces.path("Tony_Blair", 5), tmp_path / "blair.y4m")
    page = kiosk(launch(camera, camera_allowed=False), site)
    assert wait_state(page, "camera-refused", timeout=15_000) == "camera-refused"
    assert "Camera access was refused" in page.locator("#problem").inner_text()


def test_no_camera(site: Site, launch: Callable[..., Any]) -> None:
    page = kiosk(launch(has_camera=False), site)
    assert wait_state(page, "camera-missing", "camera-error", timeout=15_000) in ("camera-missing", "camera-error")
    assert page.locator("#problem").is_visible() and page.locator("#problem-retry").is_visible()


def test_verify_only_event_asks_for_the_ticket(
    stack: Stack, faces: Faces, launch: Callable[..., Any], tmp_path: Path
) -> None:
    site = new_site(stack, faces, mode="verify")
    site.enrol("Tony Blair", "V-BLAIR", [("Tony_Blair", 2), ("Tony_Blair", 3)])
    page = kiosk(launch(make_y4m(faces.path("Tony_Blair", 5), tmp_path / "blair.y4m")), site)
    # the first frame's identify is refused (403 mode_not_allowed): from then on the kiosk waits for a ticket
    page.wait_for_function(
        "() => document.getElementById('status').textContent === 'Scan or type your ticket'", timeout=60_000
    )
    seen = len(states(page))
    wait_ticks(page, QUIET_TICKS)  # without a ticket, no frame goes out however long the face is there
    assert states(page)[seen:] == [] and page.evaluate("document.body.dataset.state") == "ready", states(page)
    assert log_rows(site) == []
    assert page.evaluate("document.activeElement.id") == "ticket"  # a scanner's keystrokes land in the field
    page.keyboard.type("V-BLAIR\n")
    assert wait_state(page, "admit", "deny", "unknown") == "admit"
    assert [(r["mode"], r["decision"]) for r in log_rows(site)] == [("verify", "admit")]


def test_network_down_and_gateway_errors_then_recovery(
    site: Site, faces: Faces, launch: Callable[..., Any], tmp_path: Path
) -> None:
    camera = make_y4m(faces.path("Tony_Blair", 5), tmp_path / "blair.y4m")
    browser = launch(camera)
    page = browser.new_page(viewport={"width": 1024, "height": 768})
    # the gate endpoints unreachable (connection refused) while the page itself loaded fine
    page.route("**/v1/gate/**", lambda route: route.abort("connectionrefused"))
    page.goto(f"{site.url}/kiosk#key={site.gate_token}")
    assert wait_state(page, "offline", timeout=20_000) == "offline"
    assert "No connection" in page.locator("#problem").inner_text()
    assert page.locator("#result").is_hidden(), "no decision is shown while the gateway cannot be reached"
    # the gateway answers 503 (a dependency down): a clear "unavailable", never an admit
    page.unroute("**/v1/gate/**")
    page.route(
        "**/v1/gate/**",
        lambda route: route.fulfill(
            status=503,
            headers={"Retry-After": "1", "content-type": "application/json"},
            body='{"code":"dependency_unavailable","detail":"embedder is unavailable, try again later"}',
        ),
    )
    assert wait_state(page, "unavailable", timeout=20_000) == "unavailable"
    assert "temporarily unavailable" in page.locator("#problem").inner_text()
    # the network comes back: the kiosk retries by itself and the real gateway admits
    page.unroute("**/v1/gate/**")
    assert wait_state(page, "admit", "deny", "unknown") == "admit"
    assert page.locator("#problem").is_hidden()


def test_revoked_gate_key_goes_back_to_sign_in(
    site: Site, faces: Faces, launch: Callable[..., Any], tmp_path: Path
) -> None:
    with site.client(site.org_token) as org:
        r = org.post("/v1/keys", json={"name": "gate to revoke", "role": "gate", "event_id": site.event_id})
        assert r.status_code == 201, r.text
        key = r.json()
    camera = make_y4m(faces.path("Madonna", 2), tmp_path / "m.y4m")
    page = kiosk(launch(camera), site, key=key["token"])
    wait_state(page, "ready", "steadying", "checking", "unknown", timeout=20_000)
    with site.client(site.org_token) as org:
        assert org.post(f"/v1/keys/{key['id']}/revoke").status_code == 200
    # the next frame's 401 signs the kiosk out (the page never keeps deciding with a dead key)
    page.evaluate("document.getElementById('ticket').value = 'T-BLAIR'")
    page.press("#ticket", "Enter")
    assert wait_state(page, "signin", timeout=20_000) == "signin"
    assert "no longer valid" in page.locator("#signin-error").inner_text()


def test_pages_are_served_with_a_strict_policy(site: Site) -> None:
    for path in ("/", "/kiosk", "/web/kiosk.js", "/web/style.css"):
        r = httpx.get(site.url + path)
        assert r.status_code == 200, path
        assert "script-src 'self'" in r.headers["content-security-policy"]
    assert httpx.get(site.url + "/web/..%2Fapp.py").status_code == 404
    assert httpx.get(site.url + "/web/nothing.js").status_code == 404


def test_a_late_answer_is_never_shown(site: Site, faces: Faces, launch: Callable[..., Any], tmp_path: Path) -> None:
    """An identify answer that arrives after the kiosk moved on (a ticket was scanned meanwhile) is dropped:
    the screen shows the decision for the ticket, never the older admit."""
    site.enrol("Angelina Jolie", "T-JOLIE", [("Angelina_Jolie", 1), ("Angelina_Jolie", 2)])
    held: list[Any] = []
    camera = make_y4m(faces.path("Tony_Blair", 5), tmp_path / "blair.y4m")
    page = watch(launch(camera).new_page(viewport={"width": 1024, "height": 768}))
    page.route("**/v1/gate/identify", lambda route: held.append(route))  # held: neither answered nor failed yet
    page.goto(f"{site.url}/kiosk#key={site.gate_token}")
    wait_state(page, "checking", timeout=20_000)
    page.wait_for_function("() => window.__fetches.some(f => f.includes('/v1/gate/identify'))", timeout=20_000)
    for _ in range(1200):  # the route handler runs once Playwright dispatches the request to this thread
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1
    late = held[0].fetch()  # the real gateway's answer to that frame: an admit
    assert late.json()["decision"] == "admit"
    page.fill("#ticket", "T-JOLIE")  # someone else's ticket: 1:1 must deny this face
    page.press("#ticket", "Enter")
    assert wait_state(page, "admit", "deny", "unknown") == "deny"
    shown = len(states(page))
    with page.expect_event("requestfinished", lambda r: r.url.endswith("/v1/gate/identify"), timeout=20_000):
        held[0].fulfill(response=late)  # the old admit arrives now
    wait_ticks(page, 3)  # the page has had its turns to read and handle that answer
    assert "admit" not in states(page)[shown:], states(page)
    assert page.locator("#result").get_attribute("data-reason") == "face_mismatch"
    assert "Welcome" not in page.locator("#result").inner_text()
