"""`bench/gates.py --compare`: today's enrolment (one photo, one template each) beside the chosen one (issue 16).

"Chosen" is the event `bench/gates.py` sets up anyway (two screened photos each; the matcher adds their mean, so
three templates each, `FACEGATE_MATCHER_MEAN_TEMPLATES` on as shipped). "Today" is a second event in the same
stack with the same people enrolled with the first photo of the same pair: one template each, as before issue
16. Both events' gate frames are the photos outside the pair, so for each N the two levels send the same frames
on the same schedule (seed `--seed` + N), each with its own event's gate keys. CPU per decision is all services
and Postgres from /proc (`gates.cpu_level`, as `--liveness` measures it).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from bench import gates
from bench.report import md_table
from services.stack import Stack

CPU_RISE_MAX = 1.30  # issue 16: mean CPU per decision rises by at most 30%
GATES_DROP_MAX = 0.20  # and the largest N holding p99 drops by at most 20%


def largest_holding(rows: list[dict[str, Any]], setting: str) -> int:
    return max((r["gates"] for r in rows if r["setting"] == setting and r["holds"]), default=0)


def cpu_per_decision(rows: list[dict[str, Any]], setting: str) -> float:
    """Over every level of the setting: total CPU seconds / total server decisions, in ms."""
    mine = [r for r in rows if r["setting"] == setting]
    return sum(r["cpu_s"] for r in mine) / max(sum(r["server_decisions"] for r in mine), 1) * 1e3


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    today, chosen = largest_holding(rows, "today"), largest_holding(rows, "chosen")
    cpu_ratio = cpu_per_decision(rows, "chosen") / cpu_per_decision(rows, "today")
    gates_ratio = chosen / today if today else float("nan")
    return {
        "largest_n_holding": {"today": today, "chosen": chosen},
        "cpu_ms_per_decision": {"today": cpu_per_decision(rows, "today"), "chosen": cpu_per_decision(rows, "chosen")},
        "cpu_ratio": cpu_ratio,
        "gates_ratio": gates_ratio,
        "cpu_within_bound": cpu_ratio <= CPU_RISE_MAX,
        "gates_within_bound": gates_ratio >= 1 - GATES_DROP_MAX if today else None,
    }


def compare_table(rows: list[dict[str, Any]]) -> str:
    header = ["gates", "setting", "templates each", "frames", "decisions/s", "p50 ms", "p95 ms", "p99 ms"]
    header += ["CPU ms per decision", "x today", "errors", "holds"]
    cells = []
    for r in rows:
        s = r["summary"]
        cells.append(
            [
                r["gates"],
                r["setting"],
                r["templates_each"],
                s["sent"],
                f"{s['decisions_per_s']:.2f}",
                *(f"{s[k]:.0f}" for k in ("p50_ms", "p95_ms", "p99_ms")),
                f"{r['cpu_ms_per_decision']:.0f}",
                f"{r.get('cpu_ratio') or 1.0:.2f}",
                s["errors"],
                "yes" if r["holds"] else "no",
            ]
        )
    return md_table(header, cells)


async def compare_run(
    stack: Stack, chosen: gates.Setup, admin: str, faces: Path, levels_n: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    today = await gates.setup(
        stack,
        admin,
        faces,
        args.enrol,
        max(levels_n),
        args.enrol_concurrency,
        args.seed,
        photos_each=1,
        event_name="Bench Arena (one photo each)",
        passing=chosen.passing,
    )
    if today.tickets != chosen.tickets:
        raise SystemExit(
            "today's and the chosen event enrolled different people (the levels would not be paired): "
            f"only today {sorted(set(today.tickets) - set(chosen.tickets))}, "
            f"only chosen {sorted(set(chosen.tickets) - set(today.tickets))}"
        )
    # the same people hold back the same photos (compared as values: run as a script, gates.py is __main__ and
    # its Frame another class than bench.gates.Frame)
    assert all(
        [(f.kind, f.person, f.data) for f in today.frames[k]] == [(f.kind, f.person, f.data) for f in v]
        for k, v in chosen.frames.items()
    )
    settings = {"today": (today, 1), "chosen": (chosen, 3)}  # two photos + their mean
    rows: list[dict[str, Any]] = []
    for n in levels_n:
        today_cpu = None
        for name, (st, templates) in settings.items():
            fire = gates.plain_fire(st, n, args.mode, args.timeout)
            _, row = await gates.cpu_level(stack, st, n, args, fire, today_cpu)
            row |= {"setting": name, "templates_each": templates}
            summary, per = row["summary"], row["cpu_ms_per_decision"]
            today_cpu = per if name == "today" else today_cpu
            rows.append(row)
            print(
                f"{n} gates {name}: {summary['decisions_per_s']:.2f} decisions/s, p99 {summary['p99_ms']:.0f} ms, "
                f"{per:.0f} CPU ms/decision, errors {summary['errors']} -> "
                f"{'holds' if row['holds'] else 'does not hold'}",
                flush=True,
            )
            await asyncio.sleep(2.0)  # let queues drain between levels
    v = verdict(rows)
    print(f"\n{compare_table(rows)}\n")
    held = v["largest_n_holding"]
    print(
        f"largest N holding p99 <= {args.p99_ms:.0f} ms with no errors: today {held['today']}, chosen "
        f"{held['chosen']} (ratio {v['gates_ratio']:.2f}, bound >= {1 - GATES_DROP_MAX:.2f}); CPU per decision "
        f"over all levels: today {v['cpu_ms_per_decision']['today']:.0f} ms, chosen "
        f"{v['cpu_ms_per_decision']['chosen']:.0f} ms (ratio {v['cpu_ratio']:.2f}, bound <= {CPU_RISE_MAX:.2f})"
    )
    return {
        "config": {k: val for k, val in vars(args).items() if k != "json"} | {"faces": str(faces)},
        "enrolment": {"today": today.enrolment, "chosen": chosen.enrolment},
        "frames": {k: len(val) for k, val in chosen.frames.items()},
        "compare_levels": rows,
        "verdict": v,
    }
