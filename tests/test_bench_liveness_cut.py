"""`bench/liveness.py` cuts the extra clips' head turns by a rule written down before any check ran on them
(`cut_turns`); the README's BPCER on new people rests on that rule doing what it says. These traces are made up,
so each expectation can be read off them by hand."""

from __future__ import annotations

from bench.liveness import cut_turns, windows
from services.contracts.liveness import TurnDirection

LEFT, RIGHT = TurnDirection.LEFT, TurnDirection.RIGHT


def test_turns_run_between_zig_zag_turning_points() -> None:
    # up 40, down 60, up 20 (the last swing ends the run); a 5-degree wobble inside the first swing is no turn
    yaws: list[float | None] = [0, 10, 5, 20, 40, 30, 10, -20, -15, -10, 0]
    turns = cut_turns(yaws, [40.0] * len(yaws))
    assert turns == [(0, 4, LEFT), (4, 7, RIGHT), (7, 10, LEFT)]


def test_the_first_turning_point_is_where_the_run_first_spans_the_reversal() -> None:
    # from -25 the trace creeps up to -13 (11.6 degrees: not yet a turn), then falls: -13 is the first turning point
    yaws: list[float | None] = [-24.8, -20.0, -15.0, -13.2, -18.0, -25.2, -28.4, -24.0, -15.0, 2.0, 9.8]
    assert cut_turns(yaws, [40.0] * len(yaws)) == [(3, 6, RIGHT), (6, 10, LEFT)]


def test_missing_faces_and_tipped_heads_split_runs() -> None:
    # frame 4 has no face and frame 5 a head tipped back (eye to mouth under 75% of the median): neither is part of
    # a turn, so the 30-degree change across them is not one
    yaws: list[float | None] = [0, 15, 30, 30, None, 0, -30, -30, -15, 0]
    scales: list[float | None] = [40, 40, 40, 40, None, 20, 40, 40, 40, 40]
    assert cut_turns(yaws, scales) == [(0, 2, LEFT), (6, 9, LEFT)]


def test_small_swings_are_not_turns() -> None:
    yaws: list[float | None] = [0, 5, -5, 5, -5.5, 0, 6, 0]  # never spans 12 degrees
    assert cut_turns(yaws, [40.0] * len(yaws)) == []


def test_bursts_stay_inside_the_clip_and_long_turns_give_none() -> None:
    assert all(i <= 87 for w in windows(78, 87, 88) for i in w)
    assert any(w[-1] == 87 for w in windows(78, 87, 88))
    assert windows(95, 167) == []  # 72 frames: more than 10 frames every 3 can span


def test_every_extra_clip_has_one_split_and_round3_is_held_back_from_the_passes() -> None:
    """The splits are what the README's one-shot claims rest on: round 3 (session 8) must not feed the fourth pass
    (PEOPLE_SPLITS) nor any earlier one, and each person's bursts (mirrored or not) must count as that person."""
    from bench.liveness import (
        EXTRA_CLIPS,
        PEOPLE_SPLITS,
        RATIO_SPLITS,
        ROUND2,
        ROUND3,
        ROUND4,
        TURNS,
        Case,
        person,
        turn_split,
    )

    assert set(ROUND3) <= set(EXTRA_CLIPS) and not set(ROUND3) & set(ROUND2)
    # round 4 (session 9): six more people, in no earlier round and in no pass
    assert set(ROUND4) <= set(EXTRA_CLIPS) and not set(ROUND4) & (set(ROUND2) | set(ROUND3))
    assert all(turn_split(f"{clip}:0-10", clip) == "round4" for clip in ROUND4)
    assert "round4" not in PEOPLE_SPLITS and "round4" not in RATIO_SPLITS
    for turn, clip, *_ in TURNS:
        split = turn_split(turn, clip)
        assert (split == "round3") == (clip in ROUND3)
        assert split != "round3" or (split not in PEOPLE_SPLITS and split not in RATIO_SPLITS)
        for source in (turn, turn + "-mirrored"):
            assert person(Case("bona_fide", split, source, [], LEFT)) == clip
