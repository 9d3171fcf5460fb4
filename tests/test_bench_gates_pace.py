"""`bench/gates.py --pace kiosk` runs each gate closed loop, as `kiosk.js` does: a gate's next decision starts only
after its previous one was answered and the pause has passed, so its decisions never overlap (the open-loop
schedule's do, once a decision takes longer than the interval). The runner is driven here with a stand-in `fire`
that records when each decision starts and ends; no stack is needed to check the schedule itself."""

from __future__ import annotations

import asyncio
import itertools
import random

import httpx

from bench.gates import Fire, Sample, Setup, run_kiosk_level, run_level

SLOW_S = 0.3  # each decision takes this long: longer than the open-loop interval below
PAUSE_S = 0.1


def _recorder(spans: dict[int, list[tuple[float, float]]], tokens: list[str]) -> Fire:
    async def fire(client: httpx.AsyncClient, rng: random.Random, at: float) -> Sample:
        loop = asyncio.get_running_loop()
        gate = tokens.index(client.headers["Authorization"].removeprefix("Bearer "))
        start = loop.time()
        await asyncio.sleep(SLOW_S)
        spans.setdefault(gate, []).append((start, loop.time()))
        return Sample(1, "verify", "live", SLOW_S * 1e3, 0.0, 200)

    return fire


def _setup(n: int) -> Setup:
    return Setup(gate_tokens=[f"gate-{i}" for i in range(n)], tickets={}, frames={})


async def test_kiosk_pace_never_overlaps_a_gate_s_decisions() -> None:
    setup = _setup(2)
    spans: dict[int, list[tuple[float, float]]] = {}
    fire = _recorder(spans, setup.gate_tokens)
    samples = await run_kiosk_level("http://127.0.0.1:9", setup, 2, 1.5, 5.0, 1, fire, PAUSE_S)
    assert len(samples) == sum(len(v) for v in spans.values()) >= 4
    for gate_spans in spans.values():
        assert len(gate_spans) >= 2
        for (_, end), (start, _) in itertools.pairwise(gate_spans):
            assert start >= end + PAUSE_S - 0.01  # the next one waits for the answer and the pause


async def test_the_open_loop_schedule_does_overlap_them() -> None:
    setup = _setup(1)
    spans: dict[int, list[tuple[float, float]]] = {}
    await run_level("http://127.0.0.1:9", setup, 1, 10.0, 0.5, 5.0, 1, _recorder(spans, setup.gate_tokens))
    starts = [s for s, _ in spans[0]]
    assert len(starts) == 5 and max(b - a for a, b in itertools.pairwise(starts)) < SLOW_S
