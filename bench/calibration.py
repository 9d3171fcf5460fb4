"""Calibrated decisions through the real services, on people the calibration never saw.

    .venv/bin/python bench/calibration.py [--sizes 100,200,400] [--photos 1|1,2] [--mean on,off] [--faces DIR]
                                          [--json PATH]

1. Starts its own `Stack` (Postgres, Redis, embedder, matcher, gateway as real processes) on loopback ports.
2. Takes the held-back identities of `calib/` (`services/tools/fit.is_held_back`: the fit never read them).
   For each event size K: an event with the default targets (FPIR 0.003, FMR 1e-3) and re-entry allowed; K
   held-back identities, drawn at random among those with more than max(`--photos`) photos, are enrolled through
   the public API with `--photos` photo(s) each (a refusal counts toward the failure-to-enrol rate, by reason).
3. Every other held-back photo goes to the gate: photos of identities never enrolled are non-mated probes
   (identify: FPIR; verify with an attendee's ticket drawn per photo: FMR), the enrolled identities' other photos are
   mated probes (identify: FNIR and wrong-person admits, read from the organiser's access log; verify with
   their own ticket: FNMR). A frame refused for its face (no_face, multiple_faces, low_quality) counts as not
   admitted.
4. Prints a table per K (rates with counts and 95% Wilson intervals, the threshold the gateway used) and the
   event's own expected rates (GET /v1/events/{id}).

With `--mean on,off` each K is run once per setting of the matcher's mean template
(`FACEGATE_MATCHER_MEAN_TEMPLATES`, the matcher restarted in between), on the same identities and the same
probes: a paired comparison. With `--photos 1,2` each K is run once per photo count (issue 16's templates
lever), mean template as configured: the K identities are drawn among those with more than max(photos) photos
and every setting enrols its first n photos, in its own event of the same stack; the mated probes are the photos
after the max(photos)-th and the non-mated probes the photos of held-back identities not drawn, the same for
every setting (`paired_draw`). A drawn identity that one setting could not enrol is left out of every setting's
mated counts (its refusal is in that setting's failure to enrol), so FNIR is compared on the very same probes;
the relative FNIR reduction of each setting against the first is printed per K. One event per K and setting
and one draw each: the counts are what they are (a few hundred strangers at K = 400), so read the intervals.
`facegate calibrate` gives the same measurement over 20 draws, without the services.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import write_json  # noqa: E402
from services.stack import Stack, free_port  # noqa: E402
from services.tools.faceset import load_labelled  # noqa: E402
from services.tools.fit import Rate, is_held_back  # noqa: E402


async def gather_limited(n: int, jobs: list[Any]) -> list[Any]:
    sem = asyncio.Semaphore(n)

    async def run(job: Any) -> Any:
        async with sem:
            return await job

    return await asyncio.gather(*(run(j) for j in jobs))


@dataclass(frozen=True)
class Draw:
    """Who is enrolled and what goes to the gate, fixed before any setting runs: a paired comparison."""

    chosen: list[str]  # the K drawn identities, in draw order
    mated: list[tuple[str, Path]]  # (identity, photo) after the first `max_photos` of each drawn identity
    non_mated: list[tuple[str, Path]]  # every photo of the held-back identities not drawn


def paired_draw(people: dict[str, list[Path]], k: int, max_photos: int, rng: random.Random) -> Draw:
    """K identities with more than `max_photos` photos; their photos after the `max_photos`-th are the mated
    probes whatever a setting enrols (1 photo or 2), so every setting is measured on the same probes."""
    eligible = sorted(p for p, files in people.items() if len(files) > max_photos)
    chosen = rng.sample(eligible, k)
    drawn = set(chosen)
    return Draw(
        chosen,
        [(p, f) for p in chosen for f in people[p][max_photos:]],
        [(p, f) for p in sorted(people) if p not in drawn for f in people[p]],
    )


def relative_reduction(base: Rate, new: Rate) -> float:
    """1 - new/base: 0.25 is a quarter fewer misses (issue 16's done-when)."""
    return 1.0 - new.value / base.value if base.errors else float("nan")


def paired_fnir(draw: Draw, enrolled: list[set[str]], outcomes: list[dict[str, bool]]) -> list[Rate]:
    """Per setting, FNIR over the mated probes of the identities every setting enrolled: the same probes."""
    common = set(draw.chosen).intersection(*enrolled)
    probes = [str(f) for p, f in draw.mated if p in common]
    return [Rate(sum(not o[f] for f in probes), len(probes)) for o in outcomes]


def post_frame(path: Path) -> dict[str, Any]:
    return {"frame": (path.name, path.read_bytes(), "image/jpeg")}


async def run_size(
    base: str,
    admin: str,
    draw: Draw,
    people: dict[str, list[Path]],
    photos_each: int,
    seed: int,
    par: int,
    mean: str = "on",
) -> dict[str, Any]:
    k = len(draw.chosen)
    async with httpx.AsyncClient(base_url=base, timeout=120, headers={"Authorization": f"Bearer {admin}"}) as a:
        r = await a.post("/v1/keys", json={"name": f"bench-{k}", "role": "organiser"})
        org_token = r.json()["token"]
    org = httpx.AsyncClient(base_url=base, timeout=120, headers={"Authorization": f"Bearer {org_token}"})
    name = f"calibration K={k} photos {photos_each} mean {mean}"
    r = await org.post("/v1/events", json={"name": name, "allow_reentry": True})
    assert r.status_code == 201, r.text
    event_id = r.json()["id"]
    r = await org.post("/v1/keys", json={"name": "gate", "role": "gate", "event_id": event_id})
    gate = httpx.AsyncClient(base_url=base, timeout=120, headers={"Authorization": f"Bearer {r.json()['token']}"})

    chosen = draw.chosen
    tickets = {p: f"T{i:05d}" for i, p in enumerate(chosen)}
    refused: Counter[str] = Counter()

    async def enrol(person: str) -> tuple[str, str | None]:
        files = people[person][:photos_each]
        r = await org.post(
            f"/v1/events/{event_id}/attendees",
            data={"name": person, "ticket_code": tickets[person]},
            files=[("photos", (f.name, f.read_bytes(), "image/jpeg")) for f in files],
        )
        if r.status_code == 201:
            return person, r.json()["attendee"]["id"]
        body = r.json()
        code = body.get("code", str(r.status_code))
        if code == "quality_rejected":
            code = "+".join(sorted({x for e in body["errors"] for x in e["reasons"]}))
        refused[code] += 1
        return person, None

    t0 = time.perf_counter()
    enrolled = {p: aid for p, aid in await gather_limited(par, [enrol(p) for p in chosen]) if aid}
    enrol_s = time.perf_counter() - t0
    ev = (await org.get(f"/v1/events/{event_id}")).json()

    mated = [(p, f) for p, f in draw.mated if p in enrolled]
    all_tickets = [tickets[p] for p in enrolled]
    outcomes: dict[str, bool] = {}  # mated probe -> the right person admitted (for the paired photo comparison)
    counts: dict[str, Rate] = defaultdict(lambda: Rate(0, 0))
    reasons: Counter[str] = Counter()
    name_by_id = {aid: p for p, aid in enrolled.items()}

    async def probe(person: str, frame: Path, is_mated: bool) -> None:
        r = await gate.post("/v1/gate/identify", files=post_frame(frame))
        body = r.json()
        admitted = body.get("decision") == "admit"
        reasons[f"identify {'mated' if is_mated else 'non-mated'}: {body.get('reason', r.status_code)}"] += 1
        if is_mated:
            right = admitted and name_by_id.get(body.get("attendee_id", "")) == person
            outcomes[str(frame)] = right
            counts["fnir"] += Rate(int(not right), 1)
            counts["wrong_person"] += Rate(int(admitted and not right), 1)
        else:
            counts["fpir"] += Rate(int(admitted), 1)
        # a stranger's ticket is drawn per photo, not in the order the answers come back
        ticket = tickets[person] if is_mated else random.Random(f"{seed}:{frame}").choice(all_tickets)
        r = await gate.post("/v1/gate/verify", data={"ticket_code": ticket}, files=post_frame(frame))
        admitted = r.json().get("decision") == "admit"
        counts["fnmr" if is_mated else "fmr"] += Rate(int(not admitted) if is_mated else int(admitted), 1)

    t0 = time.perf_counter()
    await gather_limited(par, [probe(p, f, True) for p, f in mated] + [probe(p, f, False) for p, f in draw.non_mated])
    probe_s = time.perf_counter() - t0
    log = (await org.get(f"/v1/events/{event_id}/log", params={"decision": "admit", "limit": 1})).json()["items"]
    for c in (org, gate):
        await c.aclose()
    lo, hi = counts["fpir"].interval()
    return {
        "k": k,
        "photos_each": photos_each,
        "mean_template": mean,
        "templates": ev["expected"]["templates"],
        "enrolled": len(enrolled),
        "failure_to_enrol": Rate(sum(refused.values()), k).value,
        "refused": dict(refused),
        "identify_threshold": ev["identify_threshold"],
        "verify_threshold": ev["verify_threshold"],
        "margin": ev["identify_margin"],
        "expected": ev["expected"],
        "rates": {
            name: {"value": r.value, "errors": r.errors, "trials": r.trials, "ci95": r.interval()}
            for name, r in counts.items()
        },
        "fpir_ci95": [lo, hi],
        "reasons": dict(reasons),
        "enrolled_identities": sorted(enrolled),
        "mated_outcomes": outcomes,
        "logged_threshold": log[0]["threshold"] if log else None,
        "enrol_s": round(enrol_s, 1),
        "probe_s": round(probe_s, 1),
    }


MEAN_ENV = "FACEGATE_MATCHER_MEAN_TEMPLATES"


def _flag(mean: str) -> str:
    return "true" if mean == "on" else "false"


def _cell(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    return f"{r['value']:.4f} ({r['errors']}/{r['trials']}; {lo:.4f}-{hi:.4f})"


def table(rows: list[dict[str, Any]]) -> str:
    paired = all("paired_fnir" in row for row in rows)
    out = [
        "| K | photos | mean template | templates | identify threshold | FPIR (target 0.003) | FNIR | wrong-person "
        "| verify FMR (target 0.001) | verify FNMR | failure to enrol |"
        + (" FNIR, same probes | reduction |" if paired else ""),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- | --- |" if paired else ""),
    ]
    for row in rows:
        r = row["rates"]
        refused = ", ".join(f"{k} {v}" for k, v in row["refused"].items()) or "none"
        out.append(
            f"| {row['k']} | {row['photos_each']} | {row['mean_template']} | {row['templates']} "
            f"| {row['identify_threshold']:.4f} | {_cell(r['fpir'])} "
            f"| {_cell(r['fnir'])} | {_cell(r['wrong_person'])} | {_cell(r['fmr'])} | {_cell(r['fnmr'])} "
            f"| {row['failure_to_enrol']:.2%} ({refused}) |"
            + (f" {_cell(row['paired_fnir'])} | {row['fnir_reduction_vs_first']:.1%} |" if paired else "")
        )
    return "\n".join(out)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    faces = Path(args.faces or os.environ.get("FACEGATE_FACES_DIR") or REPO.parent / "shared" / "faces").resolve()
    calib = faces / "calib"
    if not calib.is_dir():
        raise SystemExit(f"no calibration photos at {calib} (--faces or FACEGATE_FACES_DIR)")
    people: dict[str, list[Path]] = defaultdict(list)
    for label, path in load_labelled(calib):
        if is_held_back(label):
            people[label].append(path)
    sizes = [int(x) for x in args.sizes.split(",")]
    photo_counts = [int(x) for x in args.photos.split(",")]
    means = [x.strip() for x in args.mean.split(",")]
    if not set(means) <= {"on", "off"}:
        raise SystemExit("--mean: on, off or on,off")
    if len(photo_counts) > 1 and len(means) > 1:
        raise SystemExit("pair either --photos or --mean, not both")
    if min(photo_counts) < 1:
        raise SystemExit("--photos: 1 or more")
    settings = [(n, m) for n in photo_counts for m in means]
    most = max(photo_counts)
    eligible = sum(len(v) > most for v in people.values())
    if max(sizes) > min(eligible, len(people) - 100):
        raise SystemExit(f"--sizes: at most {min(eligible, len(people) - 100)} with {most} photo(s) each")
    admin = "fg_bench-admin-" + uuid.uuid4().hex
    data_dir = Path(tempfile.mkdtemp(prefix="fg-cal-"))
    log_dir = REPO / "bench" / "out" / "calibration-logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    stack = Stack(
        data_dir=data_dir,
        ports={"gateway": free_port(), "embedder": free_port(), "matcher": free_port()},
        # one gate key fires every probe back to back: lift the per-gate limit for this run only
        extra_env={
            "FACEGATE_GATEWAY_BOOTSTRAP_ADMIN_KEY": admin,
            "FACEGATE_GATEWAY_RATE_LIMIT_PER_SECOND": "100000",
            MEAN_ENV: _flag(means[0]),
        },
        log_dir=log_dir,
    )
    base = stack.url("gateway")
    assert urlsplit(base).hostname == "127.0.0.1"  # loopback only
    rows = []
    try:
        stack.start()
        print(f"held-back identities: {len(people)}, photos: {sum(map(len, people.values()))}", flush=True)
        for k in sizes:
            # the same identities and probes for every setting: paired
            draw = paired_draw(people, k, most, random.Random(args.seed + k))
            k_rows = []
            for photos, mean in settings:
                if stack.extra_env[MEAN_ENV] != _flag(mean):  # the matcher reads it at start: restart it
                    stack.stop_service("matcher")
                    stack.extra_env[MEAN_ENV] = _flag(mean)
                    stack.restart("matcher")
                row = await run_size(base, admin, draw, people, photos, args.seed + k, args.parallel, mean)
                k_rows.append(row)
                r = row["rates"]
                print(
                    f"K={k} photos {photos} mean {mean}: threshold {row['identify_threshold']:.4f}, "
                    f"FPIR {_cell(r['fpir'])}, FNIR {_cell(r['fnir'])}, FMR {_cell(r['fmr'])}"
                    f" (enrol {row['enrol_s']} s, probes {row['probe_s']} s)",
                    flush=True,
                )
            paired = paired_fnir(
                draw, [set(r["enrolled_identities"]) for r in k_rows], [r["mated_outcomes"] for r in k_rows]
            )
            for row, fnir in zip(k_rows, paired, strict=True):
                row["paired_fnir"] = {"value": fnir.value, "errors": fnir.errors, "trials": fnir.trials}
                row["paired_fnir"]["ci95"] = fnir.interval()
                row["fnir_reduction_vs_first"] = relative_reduction(paired[0], fnir)
            rows += k_rows
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print("\n" + table(rows))
    if len(settings) > 1:
        print("\npaired FNIR (mated probes of the identities every setting enrolled) and its change:")
        for row in rows:
            f = row["paired_fnir"]
            print(
                f"  K={row['k']} photos {row['photos_each']} mean {row['mean_template']}: {_cell(f)}, "
                f"relative reduction vs the first setting {row['fnir_reduction_vs_first']:.1%}"
            )
    print("\nexpected by the event itself (GET /v1/events/{id}):")
    for row in rows:
        print(f"  K={row['k']} photos {row['photos_each']} mean {row['mean_template']}: {row['expected']['summary']}")
    return {"config": {k: v for k, v in vars(args).items() if k != "json"}, "sizes": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100,200,400", help="event sizes K (attendees)")
    p.add_argument("--photos", default="1", help="enrolment photos per attendee, or 1,2 (paired on the same probes)")
    p.add_argument("--mean", default="on", help="the matcher's mean template: on, off, or on,off (paired)")
    p.add_argument("--parallel", type=int, default=4, help="requests in flight")
    p.add_argument("--faces", default=None)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    write_json(args.json, result)


if __name__ == "__main__":
    main()
