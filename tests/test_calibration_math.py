"""The arithmetic behind calibrated decisions, on data whose answers are known: pair splits, empirical
thresholds, the GPD tail fit, and how a shipped calibration turns target rates into distances."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from services.contracts.calibration import DEFAULT_TARGET_FPIR, MAX_OVERRIDE_FMR, load_calibration
from services.contracts.models import MODELS
from services.tools.fit import (
    Rate,
    empirical_threshold_at_fmr,
    equal_error_rate,
    fit_calibration,
    fit_gpd,
    fmr_fnmr,
    is_held_back,
    pair_distances,
)


def test_pair_distances_split_genuine_and_impostor() -> None:
    e = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    genuine, impostor = pair_distances(e, ["a", "a", "b"])
    assert genuine.tolist() == pytest.approx([0.0])
    assert sorted(impostor.tolist()) == pytest.approx([1.0, 1.0])


def test_empirical_threshold_admits_at_most_the_allowed_impostors() -> None:
    impostor = np.linspace(0.01, 1.0, 1000)  # FMR 1e-2 allows 10 of these 1000 pairs under the threshold
    assert int(np.sum(impostor <= empirical_threshold_at_fmr(impostor, 1e-2))) == 10
    t = empirical_threshold_at_fmr(impostor, 1e-4)  # fewer than one allowed: strictly under the nearest
    assert t < impostor.min()


def test_fmr_fnmr_and_eer_on_overlapping_sets() -> None:
    genuine = np.array([0.1, 0.2, 0.3, 0.6])
    impostor = np.array([0.5, 0.7, 0.8, 0.9])
    assert fmr_fnmr(genuine, impostor, 0.55) == (0.25, 0.25)
    eer, t = equal_error_rate(genuine, impostor)
    assert eer == pytest.approx(0.25) and 0.5 <= t < 0.6


@pytest.mark.parametrize(("xi", "sigma"), [(-0.2, 0.01), (0.0, 0.02), (0.2, 0.005)])
def test_gpd_fit_recovers_known_parameters(xi: float, sigma: float) -> None:
    u = np.random.default_rng(7).random(20000)
    y = -sigma * np.log1p(-u) if xi == 0 else sigma / xi * ((1 - u) ** -xi - 1)  # the inverse CDF
    got_xi, got_sigma = fit_gpd(y)
    assert got_xi == pytest.approx(xi, abs=0.03)
    assert got_sigma == pytest.approx(sigma, rel=0.05)


def test_the_split_is_by_identity_stable_and_about_half() -> None:
    names = [f"Person_{i}" for i in range(2000)]
    held = [is_held_back(n) for n in names]
    assert held == [is_held_back(n) for n in names]  # deterministic
    assert 0.45 < np.mean(held) < 0.55


def test_a_fitted_calibration_agrees_with_the_counts_where_there_are_enough() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(150, 32))
    e = np.concatenate([c + 0.35 * rng.normal(size=(4, 32)) for c in centres])
    labels = np.asarray([str(i) for i in range(150) for _ in range(4)])
    cal = fit_calibration("synthetic", e, labels, held_back_identities=0, data="synthetic")
    assert cal.genuine_pairs == 150 * 6 and cal.impostor_pairs == 600 * 599 // 2 - 900
    _, impostor = pair_distances(e, labels)
    t = cal.verify_threshold(1e-3)  # ~180 impostor pairs to count there: the model and the count agree
    assert np.mean(impostor <= t) == pytest.approx(1e-3, rel=0.35)
    lo, hi = cal.fmr_interval(t)
    assert lo <= 1e-3 <= hi * 1.5


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_shipped_calibration_turns_targets_into_distances(model_id: str) -> None:
    cal = load_calibration(model_id)
    assert cal is not None, f"no calibration shipped for {model_id}"
    assert cal.model_id == model_id and cal.fit_identities >= 400 and cal.held_back_identities >= 400
    # the identify threshold tightens as the gallery grows, and each one holds the target at its size
    sizes = [1, 10, 100, 1_000, 10_000, 100_000]
    ts = [cal.identify_threshold(DEFAULT_TARGET_FPIR, n) for n in sizes]
    assert all(a > b for a, b in itertools.pairwise(ts)), ts
    for n, t in zip(sizes, ts, strict=True):
        assert cal.fpir(t, n) * cal.margin_factor(n) == pytest.approx(DEFAULT_TARGET_FPIR, rel=0.02)
    # stricter targets, smaller distances; the override bound sits where FMR reaches 1e-2
    assert cal.verify_threshold(1e-4) < cal.verify_threshold(1e-3) < cal.threshold_at_fmr(MAX_OVERRIDE_FMR)
    assert cal.fmr(cal.threshold_at_fmr(MAX_OVERRIDE_FMR)) == pytest.approx(MAX_OVERRIDE_FMR, rel=1e-3)
    # the descriptor's informational thresholds come from the same file
    assert MODELS[model_id].verify_threshold == pytest.approx(cal.verify_threshold(1e-3), abs=1e-4)
    # genuine side: FNMR falls as the threshold loosens; two photos do better than one
    t = cal.verify_threshold(1e-3)
    assert cal.fnmr(t * 0.8) > cal.fnmr(t) > cal.fnmr(t * 1.2)
    assert cal.fnmr(t, 2) < cal.fnmr(t, 1)


def test_rate_reports_counts_and_a_wide_interval_for_few_errors() -> None:
    r = Rate(6, 2000)
    lo, hi = r.interval()
    assert r.value == 0.003 and lo < 0.0015 and hi > 0.006
    assert "6/2000" in r.text()
    assert math.isnan(Rate(0, 0).value)
