"""Gate load benchmark (issue 8): N gate devices POSTing camera frames at a fixed rate against the whole stack.

    .venv/bin/python bench/gates.py [--gates 1,2,4,8,16] [--rate 1.0] [--duration 40] [--mode mixed|verify|identify]
                                    [--enrol 15] [--timeout 5] [--faces DIR] [--json bench/out/gates.json]
                                    [--liveness]

1. Starts its own `Stack` (Postgres, Redis, embedder, matcher, gateway as real processes) in a temp data dir on
   free loopback ports; the gateway keeps its default rate limit (10 frames/s per gate key, far above 1 frame/s).
2. Through the public API only: an organiser, an event (mode both, re-entry allowed so a genuine frame keeps
   taking the full admit path), one gate key per simulated gate. Enrols `--enrol` people with 2 photos each and
   times that step; the pairs are picked beforehand (untimed) by asking the embedder which dev photos pass the
   strict enrol profile, so no rejected-and-retried request is in the figure.
3. For each N in `--gates`: N gates, each with its own key and connection, send frames on their own open-loop
   schedule (`--rate` per gate, random phase) for `--duration` s; a late answer never delays the next frame.
   Frames are dev photos letterboxed into a 640x480 camera frame: held-back photos of enrolled people (60%),
   people never enrolled (25%, on verify they carry someone's ticket), and no-face frames (15%). `mixed` sends
   verify or identify 50/50. Latency is client-side, from the frame's scheduled send time to the answer.
4. Prints a markdown table per N and mode (decisions/s, p50/p95/p99, decisions by reason, errors = non-2xx or
   timeouts) and the largest N whose p99 over all frames is <= `--p99-ms` with no errors. Mean time per request
   in each service (from their /metrics, delta over the level) shows where the time goes.

5. `--liveness` (issue 17, `bench/gates_liveness.py`): per N, a plain level and then the same gates deciding with
   the head-turn challenge, with the CPU per decision of all services and Postgres for both; the table says
   which N keeps p99 <= `--p99-ms` from the burst's end to the decision.
6. `--compare` (issue 16, `bench/gates_compare.py`): per N, "today" (each person enrolled with one photo: one
   template each) then "chosen" (two photos: best-of + mean, the shipped default), two events of the same stack,
   the same frames and schedule; CPU per decision as in 5, and the ratios the issue bounds.

Faces root: `--faces`, else $FACEGATE_FACES_DIR, else ../shared/faces (dev/, noface/).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import md_table, write_json  # noqa: E402
from services.stack import Stack, free_port  # noqa: E402

FRAME_W, FRAME_H = 640, 480
KIND_WEIGHTS = {"enrolled": 0.60, "stranger": 0.25, "noface": 0.15}
MAX_GATES = 64  # one key each; bounds the sweep


@dataclass(frozen=True)
class Frame:
    kind: str  # enrolled | stranger | noface
    person: str | None
    data: bytes


@dataclass
class Sample:
    gates: int
    mode: str
    kind: str
    latency_ms: float  # scheduled send -> answer, client side
    lag_ms: float  # how late the client started the send (its own CPU share)
    status: int  # 0 = timeout or transport error
    decision: str = ""
    reason: str = ""
    server_ms: float | None = None  # the gateway's own frame-in to decision-out
    challenge_ms: float | None = None  # --liveness: asking for the challenge, client side
    fallback: bool = False  # --stream: the streamed parts were refused or lost, the whole burst was sent


@dataclass
class Setup:
    gate_tokens: list[str]
    tickets: dict[str, str]  # person -> ticket code
    frames: dict[str, list[Frame]]
    enrolment: dict[str, Any] = field(default_factory=dict)
    org_token: str = ""
    event_id: str = ""
    passing: dict[str, list[int]] = field(default_factory=dict)  # screened photos, reused by a second event


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def camera_frame(path: Path) -> bytes:
    """Letterbox a photo into a 640x480 camera frame (scaled to fit, grey bars), JPEG q90 like a gate's encoder."""
    im = Image.open(path).convert("RGB")
    scale = min(FRAME_W / im.width, FRAME_H / im.height)
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (FRAME_W, FRAME_H), (96, 96, 96))
    canvas.paste(im, ((FRAME_W - im.width) // 2, (FRAME_H - im.height) // 2))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def photo_numbers(folder: Path) -> list[int]:
    return sorted(int(p.stem) for p in folder.glob("*.jpg"))


# -- setup through the public API ---------------------------------------------------------------------------
async def screen(stack: Stack, faces: Path, people: list[str], concurrency: int) -> dict[str, list[int]]:
    """Photos of each person that pass the strict enrol profile, asked of the embedder directly (not timed).

    Dev photos often fail it (extra faces in the background, pose, small faces); picking accepted pairs first
    keeps rejected-and-retried requests out of the enrolment throughput.
    """
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        base_url=stack.url("embedder"), timeout=120, headers={"authorization": f"Bearer {stack.embedder_token}"}
    ) as emb:

        async def one(person: str, n: int) -> tuple[str, int, bool]:
            async with sem:
                data = (faces / "dev" / person / f"{n}.jpg").read_bytes()
                r = await emb.post(
                    "/v1/embed", params={"profile": "enrol"}, content=data, headers={"content-type": "image/jpeg"}
                )
                r.raise_for_status()
                return person, n, bool(r.json()["passed"])

        checks = await asyncio.gather(*(one(p, n) for p in people for n in photo_numbers(faces / "dev" / p)))
    passed: dict[str, list[int]] = {p: [] for p in people}
    for person, n, ok in checks:
        if ok:
            passed[person].append(n)
    return {p: sorted(v) for p, v in passed.items()}


async def enrol_one(org: httpx.AsyncClient, event_id: str, faces: Path, person: str, pair: list[int]) -> bool:
    photos = [("photos", (f"{person}-{n}.jpg", (faces / "dev" / person / f"{n}.jpg").read_bytes())) for n in pair]
    r = await org.post(
        f"/v1/events/{event_id}/attendees", data={"name": person, "ticket_code": f"T-{person}"}, files=photos
    )
    if r.status_code not in (201, 422):
        raise RuntimeError(f"enrol {person}: {r.status_code} {r.text}")
    return r.status_code == 201


async def setup(
    stack: Stack,
    admin_key: str,
    faces: Path,
    n_enrol: int,
    n_keys: int,
    concurrency: int,
    seed: int,
    *,
    photos_each: int = 2,
    event_name: str = "Bench Arena",
    passing: dict[str, list[int]] | None = None,
) -> Setup:
    """An event with `n_keys` gate keys and `n_enrol` people enrolled with `photos_each` (1 or 2) of their
    screened pair; their gate frames are the photos outside the pair whatever `photos_each`, so two events set
    up with the same seed and `passing` see the same frames."""
    base = stack.url("gateway")
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {admin_key}"}, timeout=60) as a:
        r = await a.post("/v1/keys", json={"name": "bench organiser", "role": "organiser"})
        r.raise_for_status()
        org_token = r.json()["token"]
    org = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {org_token}"}, timeout=120)
    async with org:
        r = await org.post("/v1/events", json={"name": event_name, "mode": "both", "allow_reentry": True})
        r.raise_for_status()
        event_id = r.json()["id"]
        tokens = []
        for i in range(n_keys):
            r = await org.post("/v1/keys", json={"name": f"gate {i}", "role": "gate", "event_id": event_id})
            r.raise_for_status()
            tokens.append(r.json()["token"])

        people = sorted(p.name for p in (faces / "dev").iterdir() if p.is_dir())
        t0 = time.perf_counter()
        if passing is None:
            passing = await screen(stack, faces, people, concurrency)
        screen_s = time.perf_counter() - t0
        # enrollable: two photos pass the enrol profile and two more are left to hold back for the gates
        eligible = [p for p in people if len(passing[p]) >= 2 and len(photo_numbers(faces / "dev" / p)) >= 4]
        chosen = sorted(random.Random(seed).sample(eligible, min(n_enrol, len(eligible))))
        pairs = {p: passing[p][:2] for p in chosen}

        await warm_up(base, tokens[0], faces, chosen[0])
        sem = asyncio.Semaphore(concurrency)

        async def guarded(person: str) -> tuple[str, bool]:
            async with sem:
                return person, await enrol_one(org, event_id, faces, person, pairs[person][:photos_each])

        t0 = time.perf_counter()
        results = await asyncio.gather(*(guarded(p) for p in chosen))
        wall = time.perf_counter() - t0

    tickets = {p: f"T-{p}" for p, ok in results if ok}
    strangers = [p for p in people if p not in tickets]  # never in the gallery
    frames: dict[str, list[Frame]] = {"enrolled": [], "stranger": [], "noface": []}
    for person in tickets:
        held_back = [n for n in photo_numbers(faces / "dev" / person) if n not in pairs[person]]
        frames["enrolled"] += [
            Frame("enrolled", person, camera_frame(faces / "dev" / person / f"{n}.jpg")) for n in held_back
        ]
    for person in strangers:
        for n in photo_numbers(faces / "dev" / person):
            frames["stranger"].append(Frame("stranger", person, camera_frame(faces / "dev" / person / f"{n}.jpg")))
    frames["noface"] = [Frame("noface", None, camera_frame(p)) for p in sorted((faces / "noface").glob("*.jpg"))]
    enrolment = {
        "attendees": len(tickets),
        "photos": photos_each * len(tickets),
        "requests": len(chosen),
        "rejected": len(chosen) - len(tickets),
        "concurrency": concurrency,
        "wall_s": wall,
        "attendees_per_s": len(tickets) / wall,
        "photos_per_s": photos_each * len(tickets) / wall,
        "screened_photos": sum(len(photo_numbers(faces / "dev" / p)) for p in people),
        "screened_passing_enrol_profile": sum(len(v) for v in passing.values()),
        "screen_s": screen_s,
        "eligible_people": len(eligible),
    }
    return Setup(tokens, tickets, frames, enrolment, org_token=org_token, event_id=event_id, passing=passing)


async def warm_up(base: str, token: str, faces: Path, person: str) -> None:
    """First frames of each shape trace the embedder's graphs: keep that out of the figures."""
    paths = sorted((faces / "dev" / person).glob("*.jpg"))[:1]
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as gate:
        for data in [paths[0].read_bytes(), camera_frame(paths[0])] * 3:
            r = await gate.post("/v1/gate/identify", files={"frame": ("w.jpg", data, "image/jpeg")})
            r.raise_for_status()


# -- the load ------------------------------------------------------------------------------------------------
def plan_frame(rng: random.Random, mode: str, setup: Setup) -> tuple[str, Frame, str | None]:
    m = mode if mode != "mixed" else rng.choice(("verify", "identify"))
    kind = rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
    frame = rng.choice(setup.frames[kind])
    ticket = None
    if m == "verify":
        # a stranger or an empty frame on verify comes with someone's real ticket (impostor / nobody there)
        owner = frame.person if kind == "enrolled" and frame.person else rng.choice(sorted(setup.tickets))
        ticket = setup.tickets[owner]
    return m, frame, ticket


async def send(
    client: httpx.AsyncClient, n: int, mode: str, frame: Frame, ticket: str | None, at: float, timeout: float
) -> Sample:
    loop = asyncio.get_running_loop()
    lag = loop.time() - at
    files = {"frame": ("frame.jpg", frame.data, "image/jpeg")}
    data = {"ticket_code": ticket} if ticket is not None else None
    try:
        r = await asyncio.wait_for(client.post(f"/v1/gate/{mode}", data=data, files=files), timeout)
    except (TimeoutError, httpx.HTTPError):
        return Sample(n, mode, frame.kind, (loop.time() - at) * 1e3, lag * 1e3, 0)
    s = Sample(n, mode, frame.kind, (loop.time() - at) * 1e3, lag * 1e3, r.status_code)
    if r.status_code == 200:
        body = r.json()
        s.decision, s.reason, s.server_ms = body["decision"], body["reason"], body.get("latency_ms")
    else:
        s.reason = str(r.json().get("code", "")) if "json" in r.headers.get("content-type", "") else ""
    return s


Fire = Callable[[httpx.AsyncClient, random.Random, float], Coroutine[Any, Any, Sample]]


def plain_fire(setup: Setup, n: int, mode: str, timeout: float) -> Fire:
    async def fire(client: httpx.AsyncClient, rng: random.Random, at: float) -> Sample:
        m, frame, ticket = plan_frame(rng, mode, setup)
        return await send(client, n, m, frame, ticket, at, timeout)

    return fire


async def run_level(
    base: str, setup: Setup, n: int, rate: float, duration: float, timeout: float, seed: int, fire: Fire
) -> list[Sample]:
    loop = asyncio.get_running_loop()
    frames_per_gate = max(1, int(duration * rate))
    start = loop.time() + 0.2
    tasks: list[asyncio.Task[Sample]] = []
    # a gate's own connection pool: a slow answer opens a second connection rather than holding the next frame
    clients = [
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {t}"}, timeout=timeout)
        for t in setup.gate_tokens[:n]
    ]

    async def gate(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        phase = rng.uniform(0.0, 1.0 / rate)  # gates are not synchronised
        for k in range(frames_per_gate):
            at = start + phase + k / rate
            await asyncio.sleep(max(0.0, at - loop.time()))
            tasks.append(asyncio.create_task(fire(clients[i], rng, at)))

    try:
        await asyncio.gather(*(gate(i) for i in range(n)))
        return list(await asyncio.gather(*tasks))  # each bounded by `timeout`
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


async def run_kiosk_level(
    base: str, setup: Setup, n: int, duration: float, timeout: float, seed: int, fire: Fire, pause: float
) -> list[Sample]:
    """Closed loop, as a kiosk runs: each gate starts its next decision only when its previous one is answered
    (and `pause` s later: the result on screen, the person walking through), from a random phase, until
    `duration` s have passed. A challenge gate cannot do more: its burst takes a capture of CAPTURE_S."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    clients = [
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {t}"}, timeout=timeout)
        for t in setup.gate_tokens[:n]
    ]
    samples: list[Sample] = []

    async def gate(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        at = start + rng.uniform(0.0, 1.0)  # gates are not synchronised
        while at < start + duration:
            await asyncio.sleep(max(0.0, at - loop.time()))
            samples.append(await fire(clients[i], rng, at))
            at = loop.time() + pause

    try:
        await asyncio.gather(*(gate(i) for i in range(n)))
        return samples
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


async def cpu_level(
    stack: Stack,
    st: Setup,
    n: int,
    args: argparse.Namespace,
    fire: Fire,
    baseline_ms: float | None,
    kiosk_pace: bool = False,
) -> tuple[list[Sample], dict[str, Any]]:
    """One level (seed args.seed + n) and its row: latency summary, the CPU each service and Postgres spent on it
    per decision the gateway made meanwhile (`bench/gates_liveness.py`: a decision whose answer the client gave up
    on still cost its CPU), the ratio to `baseline_ms`, and whether it holds p99 with no errors."""
    from bench import gates_liveness as gl

    parts0, decided0 = gl.cpu_by_part(stack), gl.server_decisions(stack)
    base, seed = stack.url("gateway"), args.seed + n
    if kiosk_pace:
        samples = await run_kiosk_level(base, st, n, args.duration, args.timeout, seed, fire, args.pause)
    else:
        samples = await run_level(base, st, n, args.rate, args.duration, args.timeout, seed, fire)
    await asyncio.sleep(args.timeout)  # answers the client gave up on are still being decided
    parts = {k: v - parts0.get(k, 0.0) for k, v in gl.cpu_by_part(stack).items()}
    decided = max(gl.server_decisions(stack) - decided0, 1)
    summary = summarise(samples, args.duration)
    per = sum(parts.values()) / decided * 1e3
    return samples, {
        "gates": n,
        "summary": summary,
        "cpu_s": sum(parts.values()),
        "server_decisions": decided,
        "cpu_ms_per_decision": per,
        "cpu_ms_per_decision_by_part": {k: v / decided * 1e3 for k, v in parts.items()},
        "cpu_ratio": per / baseline_ms if baseline_ms else None,
        "holds": summary["errors"] == 0 and summary["p99_ms"] <= args.p99_ms,
    }


# -- where the time goes ---------------------------------------------------------------------------------------
def scrape(stack: Stack) -> dict[str, float]:
    """Sums and counts of the latency histograms of all three services."""
    out: dict[str, float] = {}
    tokens = {"embedder": stack.embedder_token, "matcher": stack.matcher_token}
    for name in ("gateway", "embedder", "matcher"):
        headers = {"authorization": f"Bearer {tokens[name]}"} if name in tokens else None
        text = httpx.get(stack.url(name) + "/metrics", timeout=10, headers=headers).text
        for fam in text_string_to_metric_families(text):
            if fam.name not in ("facegate_http_request_seconds", "facegate_embedder_stage_seconds"):
                continue
            for s in fam.samples:
                if s.name.endswith(("_sum", "_count")) and s.labels.get("route") not in ("/metrics", "/readyz"):
                    label = s.labels.get("route") or f"stage:{s.labels.get('stage')}"
                    key = f"{name} {s.labels.get('method', '')} {label}".replace("  ", " ")
                    out[f"{key}|{s.name.rsplit('_', 1)[1]}"] = s.value
    return out


def mean_ms(before: dict[str, float], after: dict[str, float]) -> dict[str, dict[str, float]]:
    res: dict[str, dict[str, float]] = {}
    for k, v in after.items():
        if not k.endswith("|count"):
            continue
        key = k[: -len("|count")]
        count = v - before.get(k, 0.0)
        if count > 0:
            total = after[f"{key}|sum"] - before.get(f"{key}|sum", 0.0)
            res[key] = {"count": count, "mean_ms": total / count * 1e3}
    return res


# -- report ----------------------------------------------------------------------------------------------------
def summarise(samples: list[Sample], duration: float) -> dict[str, Any]:
    ok = [s for s in samples if 200 <= s.status < 300]
    lat = [s.latency_ms for s in ok]
    server = [s.server_ms for s in ok if s.server_ms is not None]
    errors = Counter(
        f"{s.status or 'timeout'}{' ' + s.reason if s.reason else ''}" for s in samples if not 200 <= s.status < 300
    )
    return {
        "sent": len(samples),
        "decisions": len(ok),
        "decisions_per_s": len(ok) / duration,
        "p50_ms": pct(lat, 50),
        "p95_ms": pct(lat, 95),
        "p99_ms": pct(lat, 99),
        "max_ms": max(lat, default=float("nan")),
        "server_p50_ms": pct(server, 50),
        "server_p99_ms": pct(server, 99),
        "client_lag_p99_ms": pct([s.lag_ms for s in samples], 99),
        "errors": sum(errors.values()),
        "errors_by": dict(errors),
        "by_reason": dict(Counter(f"{s.decision}/{s.reason}" for s in ok).most_common()),
        "by_kind": dict(sorted(Counter(f"{s.kind}:{s.decision}/{s.reason}" for s in ok).items())),
    }


def table(levels: list[dict[str, Any]]) -> str:
    rows = []
    for lv in levels:
        for i, (mode, s) in enumerate(lv["modes"].items()):
            holds = ("yes" if lv["holds"] else "no") if i == 0 else ""  # first row: all frames of the level
            reasons = ", ".join(f"{k} {v}" for k, v in s["by_reason"].items())
            errs = str(s["errors"]) + (
                f" ({', '.join(f'{k}: {v}' for k, v in s['errors_by'].items())})" if s["errors"] else ""
            )
            rows.append(
                [
                    lv["gates"],
                    mode,
                    s["sent"],
                    f"{s['decisions_per_s']:.2f}",
                    *(f"{s[k]:.0f}" for k in ("p50_ms", "p95_ms", "p99_ms", "server_p50_ms")),
                    errs,
                    reasons,
                    holds,
                ]
            )
    header = ["gates", "mode", "frames", "decisions/s", "p50 ms", "p95 ms", "p99 ms", "gateway p50 ms", "errors"]
    return md_table([*header, "decisions", "holds"], rows)


def where_time_goes(levels: list[dict[str, Any]]) -> str:
    keys = [
        ("gateway POST /v1/gate/verify", "gateway verify"),
        ("gateway POST /v1/gate/identify", "gateway identify"),
        ("embedder stage:detect", "detect"),
        ("embedder stage:embed", "embed"),
        ("embedder stage:total", "embedder total"),
    ]
    lines = []
    for lv in levels:
        t = lv["service_ms"]
        parts = [f"{label} {t[k]['mean_ms']:.0f}" for k, label in keys if k in t]
        parts += [f"{k} {v['mean_ms']:.1f}" for k, v in t.items() if k.startswith("matcher") and v["count"] >= 1]
        lines.append(f"- {lv['gates']} gates, mean ms per request: " + "; ".join(parts))
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    faces = Path(args.faces or os.environ.get("FACEGATE_FACES_DIR") or REPO.parent / "shared" / "faces").resolve()
    if not (faces / "dev").is_dir() or not (faces / "noface").is_dir():
        raise SystemExit(f"face photos not found under {faces} (need dev/ and noface/; --faces or FACEGATE_FACES_DIR)")
    levels_n = [int(x) for x in args.gates.split(",")]
    if not levels_n or min(levels_n) < 1 or max(levels_n) > MAX_GATES:
        raise SystemExit(f"--gates must be between 1 and {MAX_GATES}")
    admin = "fg_bench-admin-" + uuid.uuid4().hex
    data_dir = Path(tempfile.mkdtemp(prefix="fg-gates-"))  # short: Postgres' unix socket path is length-limited
    log_dir = REPO / "bench" / "out" / "gates-logs"
    shutil.rmtree(log_dir, ignore_errors=True)  # the services append: keep only this run's
    stack = Stack(
        data_dir=data_dir,
        ports={"gateway": free_port(), "embedder": free_port(), "matcher": free_port()},
        extra_env={"FACEGATE_GATEWAY_BOOTSTRAP_ADMIN_KEY": admin},  # rate limit left at its default
        log_dir=log_dir,
    )
    base = stack.url("gateway")
    assert urlsplit(base).hostname == "127.0.0.1"  # loopback only
    try:
        t0 = time.perf_counter()
        stack.start()
        print(f"stack up in {time.perf_counter() - t0:.1f} s (logs: {log_dir})", flush=True)
        st = await setup(stack, admin, faces, args.enrol, max(levels_n), args.enrol_concurrency, args.seed)
        e = st.enrolment
        print(
            f"enrolment: {e['attendees']} attendees, {e['photos']} photos in {e['wall_s']:.2f} s "
            f"({e['concurrency']} requests in flight): {e['attendees_per_s']:.2f} attendees/s, "
            f"{e['photos_per_s']:.2f} photos/s ({e['rejected']} rejected); screening: "
            f"{e['screened_passing_enrol_profile']}/{e['screened_photos']} dev photos pass the enrol profile",
            flush=True,
        )
        print("frames: " + ", ".join(f"{k} {len(v)}" for k, v in st.frames.items()), flush=True)
        if args.liveness:
            return await liveness_run(stack, st, faces, levels_n, args)
        if args.compare:
            from bench import gates_compare

            return await gates_compare.compare_run(stack, st, admin, faces, levels_n, args)
        levels: list[dict[str, Any]] = []
        for n in levels_n:
            before = await asyncio.to_thread(scrape, stack)
            fire = plain_fire(st, n, args.mode, args.timeout)
            samples = await run_level(base, st, n, args.rate, args.duration, args.timeout, args.seed + n, fire)
            after = await asyncio.to_thread(scrape, stack)
            modes = {"all": summarise(samples, args.duration)}
            for m in ("verify", "identify"):
                if any(s.mode == m for s in samples):
                    modes[m] = summarise([s for s in samples if s.mode == m], args.duration)
            if args.mode != "mixed":
                modes = {args.mode: modes["all"]}
            overall = summarise(samples, args.duration)
            holds = overall["errors"] == 0 and overall["p99_ms"] <= args.p99_ms
            levels.append({"gates": n, "holds": holds, "modes": modes, "service_ms": mean_ms(before, after)})
            print(
                f"{n} gates: {overall['decisions_per_s']:.2f} decisions/s, p99 {overall['p99_ms']:.0f} ms, "
                f"errors {overall['errors']}, client lag p99 {overall['client_lag_p99_ms']:.0f} ms"
                f" -> {'holds' if holds else 'does not hold'}",
                flush=True,
            )
            await asyncio.sleep(2.0)  # let queues drain between levels
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    holding = [lv["gates"] for lv in levels if lv["holds"]]
    best = max(holding, default=0)
    print(f"\n{table(levels)}\n")
    print(where_time_goes(levels))
    print(f"\nlargest N holding p99 <= {args.p99_ms:.0f} ms with no errors at {args.rate:g} frame/s per gate: {best}")
    return {
        "config": {k: v for k, v in vars(args).items() if k != "json"} | {"faces": str(faces)},
        "enrolment": st.enrolment,
        "frames": {k: len(v) for k, v in st.frames.items()},
        "levels": levels,
        "largest_n_holding": best,
    }


async def liveness_run(
    stack: Stack, st: Setup, faces: Path, levels_n: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """For each N: a plain level, then the same gates with the head-turn challenge (bench/gates_liveness.py)."""
    from bench import gates_liveness as gl

    base = stack.url("gateway")
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {st.org_token}"}, timeout=120
    ) as org:
        tickets = st.tickets | {gl.INTERVIEWEE: await gl.enrol_interviewee(org, st.event_id, faces)}
    attacked = {p: faces / "dev" / p / f"{photo_numbers(faces / 'dev' / p)[-1]}.jpg" for p in st.tickets}
    bursts = gl.make_bursts(faces, attacked)
    streams = {f"streamed {'+'.join(v.split(','))}": tuple(int(x) for x in v.split(",")) for v in args.stream or []}

    def liveness_fire(n: int, stream: tuple[int, ...] = ()) -> Fire:
        async def fire(client: httpx.AsyncClient, rng: random.Random, at: float) -> Sample:
            m, burst = gl.plan_burst(rng, args.mode, bursts)
            return await gl.send_burst(
                client,
                n=n,
                mode=m,
                burst=burst,
                tickets=tickets,
                at=at,
                timeout=args.timeout,
                sample=Sample,
                stream=stream,
            )

        return fire

    await gl.set_liveness(base, st.org_token, st.event_id, "challenge")
    warm = await run_level(base, st, 1, 1.0, 3.0, 30.0, 0, liveness_fire(1))  # the analysis' first calls trace graphs
    print("warm-up: " + ", ".join(f"{s.decision}/{s.reason or s.status}" for s in warm), flush=True)
    rows: list[dict[str, Any]] = []
    for n in levels_n:
        plain_cpu = None
        for protocol in ("plain", "challenge", *streams):
            await gl.set_liveness(base, st.org_token, st.event_id, "off" if protocol == "plain" else "challenge")
            if protocol == "plain":
                fire = plain_fire(st, n, args.mode, args.timeout)
            else:
                fire = liveness_fire(n, streams.get(protocol, ()))
            kiosk = protocol != "plain" and args.pace == "kiosk"
            samples, row = await cpu_level(stack, st, n, args, fire, plain_cpu, kiosk_pace=kiosk)
            row["protocol"] = protocol
            row["pace"] = "kiosk" if kiosk else f"{args.rate:g}/s"
            summary, per = row["summary"], row["cpu_ms_per_decision"]
            plain_cpu = per if protocol == "plain" else plain_cpu
            if protocol != "plain":
                row["challenge_p99_ms"] = pct([s.challenge_ms for s in samples if s.challenge_ms is not None], 99)
                row["stream_fallbacks"] = sum(s.fallback for s in samples)
            rows.append(row)
            print(
                f"{n} gates {protocol}: p99 {summary['p99_ms']:.0f} ms, {per:.0f} CPU ms/decision ("
                + ", ".join(f"{k} {v:.0f}" for k, v in row["cpu_ms_per_decision_by_part"].items())
                + f"), errors {summary['errors']} -> {'holds' if row['holds'] else 'does not hold'}",
                flush=True,
            )
            await asyncio.sleep(2.0)
    best = max((r["gates"] for r in rows if r["protocol"] != "plain" and r["holds"]), default=0)
    print(f"\n{gl.cpu_table(rows)}\n")
    print(f"largest N with the challenge holding p99 <= {args.p99_ms:.0f} ms after the burst, no errors: {best}")
    return {
        "config": {k: v for k, v in vars(args).items() if k != "json"} | {"faces": str(faces)},
        "enrolment": st.enrolment,
        "liveness_levels": rows,
        "largest_n_holding_with_challenge": best,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gates", default="1,2,4,8,16", help="comma-separated gate counts to sweep")
    p.add_argument("--rate", type=float, default=1.0, help="frames/s per gate")
    p.add_argument("--duration", type=float, default=40.0, help="seconds of load per gate count")
    p.add_argument("--mode", choices=("mixed", "verify", "identify"), default="mixed")
    p.add_argument("--enrol", type=int, default=15, help="people to enrol (2 photos each)")
    p.add_argument("--enrol-concurrency", type=int, default=4)
    p.add_argument("--timeout", type=float, default=5.0, help="per-frame answer timeout, s (counts as an error)")
    p.add_argument("--p99-ms", type=float, default=250.0)
    p.add_argument("--faces", default=None)
    p.add_argument("--seed", type=int, default=8)
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument(
        "--liveness",
        action="store_true",
        help="per gate count, a plain level then the head-turn challenge (challenge + 8-frame burst per decision)",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="per gate count, today's setting (one photo, one template each) then the chosen one (two photos: "
        "best-of + mean), in two events of the same stack",
    )
    p.add_argument(
        "--pace",
        choices=("open", "kiosk"),
        default="open",
        help="--liveness: challenge gates on the open-loop --rate schedule (default; at 1/s a gate's bursts overlap, "
        "which no kiosk can do), or closed loop: each gate's next challenge when its last decision is answered",
    )
    p.add_argument("--pause", type=float, default=0.0, help="--pace kiosk: seconds between an answer and the next")
    p.add_argument(
        "--stream",
        action="append",
        help="--liveness: one more level per N (repeatable: one each), the burst's first frames streamed in parts "
        "of these sizes while the capture runs (kiosk.js STREAM_AHEAD, e.g. 3,3); the latency is still from the "
        "capture's end",
    )
    args = p.parse_args()
    if args.liveness and args.compare:
        raise SystemExit("--liveness or --compare, not both")
    if args.rate <= 0 or args.duration <= 0 or args.duration * args.rate > 3600:
        raise SystemExit("--rate and --duration must be positive, at most 3600 frames per gate")
    result = asyncio.run(main_async(args))
    write_json(args.json, result)


if __name__ == "__main__":
    main()
