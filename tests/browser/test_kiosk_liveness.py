"""The kiosk's head-turn challenge in real Chromium (fake camera) against the real stack: a real head turning the
way the gateway asked is admitted; a printed photo turned the same way is denied `presentation_attack`.

The camera video loops through two segments, the head (or the print) turning to the person's right and then to
their left, each starting with a still view whose first frames carry a marker in the image's top-left corner. The
test answers the kiosk's `POST /v1/gate/challenge` itself (Playwright route) with a challenge it asked the real
gateway for, with the kiosk's own gate key, at the moment the segment that turns the issued way starts: that is
picking the clip segment after reading the issued direction. Nothing in the gateway can be told which direction
to issue; a challenge whose direction does not match the segment now playing is left to expire.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.stack import Stack
from services.tools import headturn
from tests.browser.conftest import Site, new_site, states, watch, write_y4m
from tests.gateway.conftest import Faces

FPS = 25
# frames of the still view before the turn (0.64 s: the kiosk's capture starts with its guidance) and after it
HOLD, PROFILE = 16, 35
MARKED = 4  # the first frames of a segment carry its marker (160 ms)
SLOTS = {"right": 0, "left": 1}  # marker square per segment, 40 px apart along the top edge
DECISION_TIMEOUT_MS = 90_000  # the first burst pays for the analysis' warm-up on 2 shared cores

# The marker squares' brightness on the kiosk's preview, read from the camera's own (unmirrored) pixels.
READ_MARKERS = """() => {
  const v = document.getElementById('preview');
  if (!v || !v.videoWidth) return [0, 0];
  const c = document.createElement('canvas'); c.width = 80; c.height = 32;
  const x = c.getContext('2d', { willReadFrequently: true });
  x.drawImage(v, 0, 0, 80, 32, 0, 0, 80, 32);
  return [20, 60].map((cx) => x.getImageData(cx, 16, 1, 1).data[1]);
}"""


def with_marker(frame: np.ndarray, lit: int | None) -> np.ndarray:
    out = frame.copy()
    for slot in SLOTS.values():
        value = 255 if slot == lit else 0
        out[4:28, 8 + 40 * slot : 32 + 40 * slot] = value
    return out


def segment_video(turns: dict[str, list[np.ndarray]], out: Path) -> Path:
    """For each direction: still start pose, the turn, still end pose, the turn back; marked at the start."""
    frames: list[np.ndarray] = []
    for direction, turn in turns.items():
        seg = [turn[0]] * HOLD + turn + [turn[-1]] * PROFILE + turn[::-1]
        frames += [with_marker(f, SLOTS[direction] if i < MARKED else None) for i, f in enumerate(seg)]
    return write_y4m(frames, out, fps=FPS)


def wait_segment(page: Any, timeout_s: float = 30.0) -> str:
    """Until a segment's marker lights up (a rising edge, not one already showing): its direction."""
    deadline = time.monotonic() + timeout_s
    was_lit = True
    while time.monotonic() < deadline:
        levels = page.evaluate(READ_MARKERS)
        lit = [d for d, slot in SLOTS.items() if levels[slot] > 160]
        if lit and not was_lit:
            return lit[0]
        was_lit = bool(lit)
        page.wait_for_timeout(15)
    raise AssertionError("the camera's segment markers were never seen")


def answer_challenges(page: Any, site: Site, issued: list[dict[str, Any]]) -> None:
    """The kiosk's challenge requests are answered with real challenges whose direction the video plays now."""

    def handle(route: Any) -> None:
        for _ in range(8):  # each try: a fresh challenge at a segment's start (p = 1/2 that it matches)
            playing = wait_segment(page)
            with site.client(site.gate_token) as gate:
                r = gate.post("/v1/gate/challenge")
            assert r.status_code == 201, r.text
            if r.json()["direction"] == playing:
                issued.append(r.json())
                route.fulfill(status=201, json=r.json())
                return
        route.abort()

    page.route("**/v1/gate/challenge", handle)


@pytest.fixture(scope="module")
def clip(faces_dir: Path) -> list[np.ndarray]:
    return headturn.read_clip(faces_dir / headturn.CLIP)


@pytest.fixture(scope="module")
def site(stack: Stack, faces: Faces, clip: list[np.ndarray]) -> Site:
    s = new_site(stack, faces, allow_reentry=True, liveness="challenge")
    photo = headturn.jpeg(headturn.camera_frame(clip[headturn.FRONTAL_FRAME]))
    with s.client(s.org_token) as org:
        r = org.post(
            f"/v1/events/{s.event_id}/attendees",
            data={"name": "Interviewee", "ticket_code": "T-LIVE"},
            files=[("photos", ("interviewee.jpg", photo, "image/jpeg"))],
        )
    assert r.status_code == 201, r.text
    return s


def kiosk_decision(launch: Callable[..., Any], site: Site, camera: Path) -> tuple[Any, list[dict[str, Any]]]:
    issued: list[dict[str, Any]] = []
    page = watch(launch(camera).new_page(viewport={"width": 1024, "height": 768}))
    answer_challenges(page, site, issued)
    page.goto(f"{site.url}/kiosk#key={site.gate_token}")
    page.wait_for_function(
        "() => ['admit', 'deny', 'unknown'].includes(document.body.dataset.state)", timeout=DECISION_TIMEOUT_MS
    )
    return page, issued


def log_rows(site: Site, limit: int = 1) -> list[dict[str, Any]]:
    with site.client(site.org_token) as org:
        r = org.get(f"/v1/events/{site.event_id}/log", params={"limit": limit})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def last_log(site: Site) -> dict[str, Any]:
    return log_rows(site)[0]


def test_real_head_turning_as_asked_is_admitted(
    site: Site, clip: list[np.ndarray], launch: Callable[..., Any], tmp_path: Path, shots: Callable[..., Path]
) -> None:
    turns = {d: headturn.turn(clip, d, lead=0) for d in SLOTS}
    page, issued = kiosk_decision(launch, site, segment_video(turns, tmp_path / "head-turns.y4m"))
    result = page.locator("#result")
    why = [(e["reason"], e["liveness"]) for e in log_rows(site, 2)]
    assert result.get_attribute("data-decision") == "admit", (result.inner_text(), why)
    assert "Welcome, Interviewee" in result.inner_text()
    assert "challenge" in states(page) and "checking" in states(page), states(page)
    # the kiosk guided the person the way the gateway asked: the arrow on that side
    direction = issued[-1]["direction"]
    assert page.locator("#guide").get_attribute("data-direction") == direction
    assert page.locator("#guide-arrow").inner_text() == {"left": "\u2190", "right": "\u2192"}[direction]
    fetches = page.evaluate("window.__fetches")
    assert "POST /v1/gate/identify/burst" in fetches and "POST /v1/gate/identify" not in fetches, fetches
    # the first six frames went ahead while the head turned, the decision carried the last two
    burst = [(a["call"], a["status"], a["form"]) for a in page.evaluate("window.__answers") if "/burst" in a["call"]]
    assert burst[-2:] == [
        ("POST /v1/gate/burst/frames", 202, {"frames": 6, "offset": "0", "streamed": None}),
        ("POST /v1/gate/identify/burst", 200, {"frames": 2, "offset": None, "streamed": "6"}),
    ], burst
    shots(page, "kiosk-liveness-admit")
    entry = last_log(site)
    assert (entry["decision"], entry["reason"], entry["liveness"]) == ("admit", "match", "live"), entry


def test_when_streaming_fails_the_kiosk_sends_the_whole_burst(
    site: Site, clip: list[np.ndarray], launch: Callable[..., Any], tmp_path: Path
) -> None:
    """The streamed parts never reach the gateway (cut here, as a lost uplink or a gateway without the route):
    the decision carries all eight frames and the live turn is still admitted."""
    turns = {d: headturn.turn(clip, d, lead=0) for d in SLOTS}
    issued: list[dict[str, Any]] = []
    page = watch(launch(segment_video(turns, tmp_path / "head-turns.y4m")).new_page())
    answer_challenges(page, site, issued)
    page.route("**/v1/gate/burst/frames", lambda route: route.abort())
    page.goto(f"{site.url}/kiosk#key={site.gate_token}")
    page.wait_for_function(
        "() => ['admit', 'deny', 'unknown'].includes(document.body.dataset.state)", timeout=DECISION_TIMEOUT_MS
    )
    assert page.locator("#result").get_attribute("data-decision") == "admit", page.locator("#result").inner_text()
    burst = [(a["call"], a["status"], a["form"]) for a in page.evaluate("window.__answers") if "/burst" in a["call"]]
    assert burst[-1] == ("POST /v1/gate/identify/burst", 200, {"frames": 8, "offset": None, "streamed": None}), burst
    assert not any(call.endswith("/frames") for call, _, _ in burst), "an aborted part has no answer"
    assert "POST /v1/gate/burst/frames" in page.evaluate("window.__fetches"), "the kiosk did try to stream"


def test_printed_photo_turned_as_asked_is_a_presentation_attack(
    site: Site, clip: list[np.ndarray], launch: Callable[..., Any], tmp_path: Path, shots: Callable[..., Path]
) -> None:
    photo = headturn.camera_frame(clip[headturn.FRONTAL_FRAME])  # the enrolled picture itself, printed
    turns = {
        d: headturn.planar_turn(photo, **headturn.PRINT_TURN) for d in SLOTS
    }  # the attacker turns the print one way
    page, _ = kiosk_decision(launch, site, segment_video(turns, tmp_path / "print.y4m"))
    result = page.locator("#result")
    assert (result.get_attribute("data-decision"), result.get_attribute("data-reason")) == (
        "deny",
        "presentation_attack",
    ), result.inner_text()
    assert "A photo or screen was shown instead of a face" in result.inner_text()
    fetches = page.evaluate("window.__fetches")
    assert fetches.count("POST /v1/gate/identify/burst") == 1, "an attack is final: no second try"
    shots(page, "kiosk-liveness-attack")
    entry = last_log(site)
    assert (entry["decision"], entry["reason"], entry["liveness"]) == ("deny", "presentation_attack", "planar_motion")


def test_console_creates_shows_and_switches_the_head_turn_check(site: Site, launch: Callable[..., Any]) -> None:
    page = launch().new_page(viewport={"width": 1280, "height": 1000})
    page.goto(site.url + "/")
    page.get_by_label("API key (organiser)").fill(site.org_token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#app-view:not([hidden])")
    # the current event (the site's, created with the check on) is shown with it, once the events are loaded
    page.wait_for_function("() => document.getElementById('event-liveness-line').dataset.liveness === 'challenge'")
    page.locator("#event-create summary").click()
    page.get_by_label("Event name").fill("Head-turn Arena")
    page.get_by_label("Head-turn check against photos and screens").check()
    page.get_by_role("button", name="Create event").click()
    page.wait_for_function(
        "() => document.querySelector('#event-select option:checked').textContent.includes('Head-turn')"
    )
    line = page.locator("#event-liveness-line")
    page.wait_for_function("() => document.getElementById('event-liveness-line').dataset.liveness === 'challenge'")
    assert "Head-turn check: on" in line.inner_text()
    event_id = page.locator("#event-select").input_value()
    assert event_id != site.event_id

    def stored() -> str:
        with site.client(site.org_token) as org:
            return str(org.get(f"/v1/events/{event_id}").json()["liveness"])

    assert stored() == "challenge"
    page.get_by_role("button", name="Turn off").click()
    page.wait_for_function("() => document.getElementById('event-liveness-line').dataset.liveness === 'off'")
    assert "Head-turn check: off" in line.inner_text() and stored() == "off"
    page.get_by_role("button", name="Turn on").click()
    page.wait_for_function("() => document.getElementById('event-liveness-line').dataset.liveness === 'challenge'")
    assert stored() == "challenge"
