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
