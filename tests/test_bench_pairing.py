"""The paired comparisons of issue 16's benchmarks measure every setting on the same people and the same probes.

`bench/calibration.py --photos 1,2` draws once per K and hands the same draw to each photo count; these tests pin
what that draw is on the real held-back calibration identities, and that the comparison's FNIR counts exactly the
same probes for every setting. `bench/gates_compare.py`'s verdict is checked against the issue's bounds.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import pytest

from bench.calibration import paired_draw, paired_fnir, relative_reduction
from bench.gates_compare import verdict
from services.tools.faceset import load_labelled
from services.tools.fit import Rate, is_held_back
from tests.conftest import REQUIRE_FACES, skip_unless_required


@pytest.fixture(scope="module")
def held_back(faces_dir: Path) -> dict[str, list[Path]]:
    calib = faces_dir / "calib"
    if not calib.is_dir():
        skip_unless_required(REQUIRE_FACES, f"no calibration photos at {calib}")
    people: dict[str, list[Path]] = defaultdict(list)
    for label, path in load_labelled(calib):
        if is_held_back(label):
            people[label].append(path)
    return dict(people)


def test_draw_gives_every_photo_count_the_same_probes(held_back: dict[str, list[Path]]) -> None:
    draw = paired_draw(held_back, 40, 2, random.Random(113))
    assert draw == paired_draw(held_back, 40, 2, random.Random(113))  # the bench draws once per K: reproducible
    assert len(set(draw.chosen)) == 40 and all(len(held_back[p]) > 2 for p in draw.chosen)
    probes = {f for _, f in draw.mated}
    for n in (1, 2):  # what each setting enrols: the first n photos, never a probe
        assert not probes & {f for p in draw.chosen for f in held_back[p][:n]}
    assert probes == {f for p in draw.chosen for f in held_back[p][2:]}
    strangers = {p for p, _ in draw.non_mated}
    assert not strangers & set(draw.chosen)
    assert strangers == set(held_back) - set(draw.chosen)
    assert len(draw.non_mated) == sum(len(held_back[p]) for p in strangers)


def test_paired_fnir_counts_only_identities_every_setting_enrolled(held_back: dict[str, list[Path]]) -> None:
    draw = paired_draw(held_back, 10, 2, random.Random(7))
    refused = draw.chosen[0]  # the two-photo setting could not enrol this one
    one = {str(f): i % 2 == 0 for i, (_, f) in enumerate(draw.mated)}
    two = {str(f): True for p, f in draw.mated if p != refused}
    rates = paired_fnir(draw, [set(draw.chosen), set(draw.chosen) - {refused}], [one, two])
    kept = [str(f) for p, f in draw.mated if p != refused]
    assert [r.trials for r in rates] == [len(kept), len(kept)]
    assert rates[0].errors == sum(not one[f] for f in kept) and rates[1].errors == 0
    assert relative_reduction(rates[0], rates[1]) == 1.0
    assert relative_reduction(Rate(40, 100), Rate(30, 100)) == pytest.approx(0.25)


def _row(setting: str, gates: int, holds: bool, cpu_s: float, decisions: float) -> dict[str, object]:
    return {"setting": setting, "gates": gates, "holds": holds, "cpu_s": cpu_s, "server_decisions": decisions}


def test_compare_verdict_applies_the_issue_bounds() -> None:
    rows = [
        _row("today", 8, True, 10.0, 100),
        _row("chosen", 8, True, 12.0, 100),
        _row("today", 12, True, 15.0, 150),
        _row("chosen", 12, False, 18.0, 150),
        _row("today", 16, False, 20.0, 200),
        _row("chosen", 16, False, 26.0, 200),
    ]
    v = verdict(rows)  # type: ignore[arg-type]
    assert v["largest_n_holding"] == {"today": 12, "chosen": 8}
    assert v["gates_ratio"] == pytest.approx(8 / 12) and v["gates_within_bound"] is False  # a third fewer gates
    assert v["cpu_ratio"] == pytest.approx(56 / 45) and v["cpu_within_bound"] is True  # CPU over all levels
    assert verdict(rows[:2])["gates_within_bound"] is True  # type: ignore[arg-type]
