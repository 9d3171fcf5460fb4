"""Browser tests: Debian's Chromium driven by Playwright against the real stack (`services.stack.Stack`: real
Postgres, Redis, embedder, matcher, gateway processes), as `make run` starts it.

The camera is Chromium's fake capture device fed a `.y4m` video made here from a dev photo, so the kiosk
really captures a face and the gateway really decides on it. Screenshots go to the test's tmp dir; with
`FACEGATE_SCREENSHOTS=<dir>` the README's two pictures are written there too (faces blurred).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.stack import Stack
from tests.conftest import REQUIRE_BROWSER, skip_unless_required
from tests.gateway.conftest import Faces
from tests.stacks import new_stack, open_event

CHROMIUM = os.environ.get("FACEGATE_CHROMIUM", "/usr/bin/chromium")
ADMIN = "fg_browser-admin-" + uuid.uuid4().hex
FRAME_W, FRAME_H = 640, 480
BASE_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
]
# Faces on pictures meant for the README are blurred: dev photos are not ours to publish.
# (set through the CSSOM: the pages' Content-Security-Policy rightly refuses an injected <style>)
BLUR_JS = "for (const e of document.querySelectorAll('video, img, canvas')) e.style.filter = 'blur(32px)';"


# Installed into a page before its scripts run (`watch(page)`), so tests wait on what the page did, not on
# fixed sleeps: `__ticks` counts interval callbacks run (the kiosk's only interval is its camera sampling tick),
# `__states` every value <body data-state> took, in order, `__fetches` every fetch() the page made, and
# `__answers` each answered one's status and, for a form, its frame count and `offset` / `streamed` fields.
WATCH_JS = """
(() => {
  window.__ticks = 0;
  window.__states = [];
  window.__fetches = [];
  const every = window.setInterval;
  window.setInterval = function (fn, ms, ...args) {
    return every.call(window, function (...a) { window.__ticks++; return fn.apply(this, a); }, ms, ...args);
  };
  const fetch = window.fetch;
  window.__answers = [];
  window.fetch = function (input, init) {
    const call = `${(init && init.method) || "GET"} ${input}`;
    window.__fetches.push(call);
    const body = init && init.body;
    const form = body instanceof FormData
      ? { frames: body.getAll("frames").length, offset: body.get("offset"), streamed: body.get("streamed") } : null;
    const answer = fetch.call(window, input, init);
    answer.then((r) => window.__answers.push({ call, status: r.status, form }), () => {});
    return answer;
  };
  new MutationObserver((records) => {
    records.forEach((r, i) => {
      if (r.target !== document.body) return;
      const later = records.slice(i + 1).find((x) => x.target === document.body);
      window.__states.push(later ? later.oldValue : document.body.dataset.state);
    });
  }).observe(document, { attributes: true, attributeOldValue: true, subtree: true, attributeFilter: ["data-state"] });
})();
"""


def watch(page: Any) -> Any:
    """`page` with WATCH_JS installed for every document it loads from now on."""
    page.add_init_script(WATCH_JS)
    return page


def states(page: Any) -> list[str]:
    return list(page.evaluate("window.__states"))


def wait_ticks(page: Any, n: int, timeout: int = 60_000) -> None:
    """Until the page's interval callbacks have run `n` more times: however slow the machine, the kiosk has
    then sampled the camera `n` times and had every chance to act on what it saw."""
    target = int(page.evaluate("window.__ticks")) + n
    page.wait_for_function("n => window.__ticks >= n", arg=target, timeout=timeout)


def chromium_path() -> str:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        skip_unless_required(
            REQUIRE_BROWSER,
            f"Chromium not found at {CHROMIUM}: `make test` installs it as root (apt-get install chromium); "
            "set FACEGATE_CHROMIUM to another binary",
        )
    return CHROMIUM


def make_y4m(photo: Path, out: Path, frames: int = 30) -> Path:
    """A 640x480 'camera' video of one still photo (letterboxed on grey), in the y4m format Chromium's fake
    capture device reads; it loops, so the camera shows the photo for as long as the page runs."""
    import cv2
    import numpy as np

    img = cv2.imread(str(photo))
    assert img is not None, photo
    h, w = img.shape[:2]
    scale = min(FRAME_W / w, FRAME_H / h)
    resized = cv2.resize(img, (int(w * scale) // 2 * 2, int(h * scale) // 2 * 2), interpolation=cv2.INTER_AREA)
    canvas = np.full((FRAME_H, FRAME_W, 3), 128, np.uint8)
    y0, x0 = (FRAME_H - resized.shape[0]) // 2, (FRAME_W - resized.shape[1]) // 2
    canvas[y0 : y0 + resized.shape[0], x0 : x0 + resized.shape[1]] = resized
    return write_y4m([canvas] * frames, out, fps=15)


def write_y4m(frames: list[Any], out: Path, fps: int) -> Path:
    """BGR 640x480 frames as a y4m video at `fps` (Chromium's fake camera plays it in a loop at that rate)."""
    import cv2

    with out.open("wb") as f:
        f.write(f"YUV4MPEG2 W{FRAME_W} H{FRAME_H} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            assert frame.shape == (FRAME_H, FRAME_W, 3), frame.shape
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return out


@pytest.fixture(scope="package")  # stopped when tests/browser is done, not held through the rest of the suite
def stack(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path) -> Iterator[Stack]:
    chromium_path()  # no browser: skip before paying for the stack
    data_dir = tmp_path_factory.mktemp("browser-stack")
    s = new_stack(data_dir, admin_key=ADMIN)
    try:
        s.start()
        yield s
    finally:
        s.stop()


@dataclass
class Site:
    """A tenant on the running stack: organiser key, one event, a gate key; seeds data through the public API
    (sync httpx: Playwright's sync API owns this thread's event loop)."""

    url: str
    org_token: str
    event_id: str
    gate_token: str
    faces: Faces

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60.0)

    def enrol(self, name: str, ticket: str, photos: list[tuple[str, int]]) -> dict[str, Any]:
        with self.client(self.org_token) as org:
            r = org.post(
                f"/v1/events/{self.event_id}/attendees",
                data={"name": name, "ticket_code": ticket},
                files=[("photos", self.faces.photo(p, n)) for p, n in photos],
            )
        assert r.status_code == 201, r.text
        return dict(r.json()["attendee"])

    def identify(self, identity: str, n: int) -> dict[str, Any]:
        with self.client(self.gate_token) as gate:
            r = gate.post("/v1/gate/identify", files={"frame": self.faces.photo(identity, n)})
        assert r.status_code == 200, r.text
        return dict(r.json())


def new_site(stack: Stack, faces: Faces, **event: Any) -> Site:
    v = open_event(
        stack,
        ADMIN,
        organiser="browser organiser",
        event={"name": "Browser Arena", "mode": "both", **event},
        gate="north gate 1",
    )
    url = stack.url("gateway")
    return Site(url=url, org_token=v.org_token, event_id=v.event_id, gate_token=v.gate_token, faces=faces)


@pytest.fixture(scope="session")
def faces(faces_dir: Path) -> Faces:
    return Faces(faces_dir)


@pytest.fixture(scope="package")
def playwright_driver() -> Iterator[Any]:
    try:
        from playwright import sync_api
    except ImportError:
        skip_unless_required(REQUIRE_BROWSER, "playwright is not installed: it is in the dev extra (make setup)")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture
def launch(playwright_driver: Any, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """launch(camera=<y4m or None>, camera_allowed=True, has_camera=True) -> a Chromium browser, closed after
    the test. Without the fake device a headless Chromium has no camera at all."""
    browsers: list[Any] = []

    def go(camera: Path | None = None, camera_allowed: bool = True, has_camera: bool = True) -> Any:
        args = [a for a in BASE_ARGS if has_camera or a != "--use-fake-device-for-media-stream"]
        if camera is not None:
            args.append(f"--use-file-for-fake-video-capture={camera}")
        if camera_allowed:
            args.append("--use-fake-ui-for-media-stream")  # answers the permission prompt with "allow"
        browser = playwright_driver.chromium.launch(executable_path=chromium_path(), args=args)
        browsers.append(browser)
        new_page = browser.new_page

        def watched_page(**kwargs: Any) -> Any:
            page = new_page(**kwargs)
            page.on("pageerror", lambda err: errors.append(f"{page.url}: {err}"))
            return page

        browser.new_page = watched_page
        return browser

    errors: list[str] = []
    yield go
    for b in browsers:
        b.close()
    assert errors == [], "uncaught JavaScript errors on the pages"


@pytest.fixture
def shots(tmp_path: Path) -> Callable[..., Path]:
    """shots(page, name, readme=False, full_page=False): a PNG in the test's tmp dir; README pictures are
    blurred first and also copied to $FACEGATE_SCREENSHOTS when set."""

    def take(page: Any, name: str, readme: bool = False, full_page: bool = False) -> Path:
        path = tmp_path / f"{name}.png"
        if readme:
            page.evaluate(BLUR_JS)
            # two animation frames: the blur has been painted (not a guess at how long that takes)
            page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
        page.screenshot(path=str(path), full_page=full_page)
        assert path.stat().st_size > 1000
        out = os.environ.get("FACEGATE_SCREENSHOTS")
        if readme and out:
            Path(out).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(out) / path.name)
        return path

    return take
