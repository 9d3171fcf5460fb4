"""The lever arithmetic `facegate levers` relies on, on synthetic embeddings (no photos, no models)."""

from __future__ import annotations

import numpy as np

from services.tools.levers import Event, Fusion, Outcome, flip_average, measure, normalise, per_attendee


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return normalise(rng.normal(size=(n, d)))


def test_a_fused_distance_is_the_cosine_distance_of_the_scaled_concatenation() -> None:
    rng = np.random.default_rng(0)
    a, b = _unit(rng, 20, 8), _unit(rng, 20, 16)
    fu = Fusion(0.6, (0.5, 0.8), (0.05, 0.1))
    e = fu.embed(a, b)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-12)
    fused = 1.0 - e @ e.T
    np.testing.assert_allclose(fused, fu.distance(1.0 - a @ a.T, 1.0 - b @ b.T), atol=1e-12)
    # z-normalised: the weaker-spread model counts more per unit of distance
    assert 0.5 < fu.a < 1.0


def test_flip_average_is_normalised_and_symmetric() -> None:
    rng = np.random.default_rng(1)
    a, b = _unit(rng, 5, 8), _unit(rng, 5, 8)
    np.testing.assert_allclose(flip_average(a, b), flip_average(b, a))
    np.testing.assert_allclose(np.linalg.norm(flip_average(a, b), axis=1), 1.0)


def test_template_modes_and_the_fpir_reading() -> None:
    rng = np.random.default_rng(2)
    centres = _unit(rng, 3, 32)
    rows = normalise(np.repeat(centres, 3, axis=0) + 0.2 * rng.normal(size=(9, 32)))
    strangers = _unit(rng, 6, 32)
    e = np.concatenate([strangers, rows])
    # attendees 0..2 enrolled with their first two photos; their third photo is the probe
    tmpl = np.asarray([6, 7, 9, 10, 12, 13])
    ev = Event(3, tmpl, np.asarray([0, 0, 1, 1, 2, 2]), np.concatenate([np.arange(6), [8, 11, 14]]), 6, np.arange(3))
    best, mean, both = (per_attendee(e, ev, m) for m in ("best", "mean", "both"))
    assert np.all(both <= best + 1e-12) and np.all(both <= mean + 1e-12)
    o = Outcome.of(both, ev)
    assert list(o.got[6:]) == [0, 1, 2]
    r = measure([o], threshold=float(o.best[6:].max()), margin=0.0, k=3, templates=2, mode="both")
    assert r.fnir.errors == 0 and r.rank1.errors == 0 and r.fpir.trials == 6


def test_a_cascade_asks_the_second_model_only_in_its_band_and_keeps_clear_decisions() -> None:
    from services.tools.levers import Band, cascade_outcome

    rng = np.random.default_rng(3)
    centres = _unit(rng, 4, 16)
    first = normalise(np.concatenate([centres, centres + 0.05 * rng.normal(size=(4, 16)), _unit(rng, 3, 16)]))
    second = normalise(rng.normal(size=(11, 8)))
    ev = Event(4, np.arange(4), np.arange(4), np.concatenate([np.arange(8, 11), np.arange(4, 8)]), 3, np.arange(4))
    d1 = per_attendee(first, ev)
    t1 = float(np.sort(d1.min(axis=1))[3])  # a threshold between the attendees' and the strangers' distances
    fu = Fusion(0.5, (0.0, 0.0), (1.0, 1.0))
    # A band that holds nobody: every decision is the first model's, on the fused scale.
    o, b_non, b_mated = cascade_outcome(first, second, fu, ev, Band(t1, t1), t1, 0.0, fused_threshold=2 * t1)
    assert not b_non.any() and not b_mated.any()
    clear = d1.min(axis=1) <= t1
    np.testing.assert_allclose(o.best[clear], 2 * d1.min(axis=1)[clear])
    assert np.isinf(o.best[~clear]).all()
    # A band around everything: every frame goes to the second model and is re-scored with the fused distance.
    o, b_non, b_mated = cascade_outcome(first, second, fu, ev, Band(-1.0, 3.0), t1, 0.0, fused_threshold=t1)
    assert b_non.all() and b_mated.all()
    d2 = per_attendee(second, ev)
    np.testing.assert_allclose(o.best, np.min(fu.distance(d1, d2), axis=1))


def test_flipped_embeddings_have_their_own_cache_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from services.tools.faceset import _cache_key

    (tmp_path / "a").mkdir()
    photo = tmp_path / "a" / "1.jpg"
    photo.write_bytes(b"x")
    items = [("a", photo)]
    plain = _cache_key("m", "{}", items, tmp_path)
    assert _cache_key("m", "{}", items, tmp_path, "|flip") != plain
    assert _cache_key("m", "{}", items, tmp_path, "") == plain
