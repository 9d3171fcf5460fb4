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
        ROUND5,
        ROUND6,
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
    # round 5 (session 10): six more people, likewise
    assert set(ROUND5) <= set(EXTRA_CLIPS) and not set(ROUND5) & (set(ROUND2) | set(ROUND3) | set(ROUND4))
    assert all(turn_split(f"{clip}:0-10", clip) == "round5" for clip in ROUND5)
    assert "round5" not in PEOPLE_SPLITS and "round5" not in RATIO_SPLITS
    # round 6 (session 10): five more people, likewise
    earlier = set(ROUND2) | set(ROUND3) | set(ROUND4) | set(ROUND5)
    assert set(ROUND6) <= set(EXTRA_CLIPS) and not set(ROUND6) & earlier
    assert all(turn_split(f"{clip}:0-10", clip) == "round6" for clip in ROUND6)
    assert "round6" not in PEOPLE_SPLITS and "round6" not in RATIO_SPLITS
    for turn, clip, *_ in TURNS:
        split = turn_split(turn, clip)
        assert (split == "round3") == (clip in ROUND3)
        assert split != "round3" or (split not in PEOPLE_SPLITS and split not in RATIO_SPLITS)
        for source in (turn, turn + "-mirrored"):
            assert person(Case("bona_fide", split, source, [], LEFT)) == clip


def test_kiosk_like_is_a_clear_turn_from_the_front_that_stops_before_profile() -> None:
    """The rule declared in session 10 before it was computed on any round (README "Presentation attacks" 10)."""
    from bench.liveness import kiosk_like

    assert kiosk_like(0.0, 30.0) and kiosk_like(-15.0, -35.0) and kiosk_like(10.0, -10.0) and kiosk_like(5, 60)
    assert not kiosk_like(16.0, 45.0)  # starts turned: the person was not looking at the camera
    assert not kiosk_like(0.0, 19.9)  # not a clear turn
    assert not kiosk_like(5.0, 61.0)  # into profile


def test_bursts_carry_their_turns_pose_and_rows_count_kiosk_like_ones_apart() -> None:
    """`mark_poses` gives a turn's pose to its bursts, mirrored or not, and nothing else; `table` and `by_turn_size`
    count the kiosk-like and the size bands from it."""
    from bench.liveness import Case, by_turn_size, mark_poses, table
    from services.contracts.liveness import LivenessVerdict

    def case(kind: str, source: str, live: bool) -> Case:
        c = Case(kind, "round5", source, [], LEFT)
        c.results["verdict"] = (LivenessVerdict.LIVE if live else LivenessVerdict.LIVENESS_FAILED).value
        return c

    cases = [
        case("bona_fide", "a:0-9", True),
        case("bona_fide", "a:0-9-mirrored", False),
        case("bona_fide", "a:9-20", False),  # from 30 degrees: not kiosk-like
        case("replay_other", "a:0-9", True),
    ]
    mark_poses(cases, {"a:0-9": (2.0, 34.0), "a:9-20": (34.0, 20.0)})
    assert [c.results.get("kiosk_like") for c in cases] == [True, True, False, None]
    rows = {str(r["rate"]): r for r in table(cases)}
    kiosk = rows["BPCER kiosk-like head turns"]
    assert (kiosk["errors"], kiosk["n"], kiosk["sources"]) == (1, 2, 2)
    assert (rows["BPCER bona fide head turns"]["errors"], rows["BPCER bona fide head turns"]["n"]) == (2, 3)
    assert by_turn_size(cases) == {"round5": {"30+": (1, 2), "under 20": (1, 1)}}
