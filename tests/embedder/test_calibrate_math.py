"""The threshold arithmetic behind the shipped defaults, on distances whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from services.embedder.calibrate import (
    calibrate,
    equal_error_rate,
    fmr_fnmr,
    fpir_at,
    pair_distances,
    threshold_at_fmr,
)


def test_pair_distances_split_genuine_and_impostor() -> None:
    e = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    genuine, impostor = pair_distances(e, ["a", "a", "b"])
    assert genuine.tolist() == pytest.approx([0.0])
    assert sorted(impostor.tolist()) == pytest.approx([1.0, 1.0])


def test_threshold_at_fmr_admits_at_most_the_allowed_impostors() -> None:
    impostor = np.linspace(0.01, 1.0, 1000)  # 1000 pairs: FMR 1e-2 allows 10 of them under the threshold
    t = threshold_at_fmr(impostor, 1e-2)
    assert int(np.sum(impostor <= t)) == 10
    t = threshold_at_fmr(impostor, 1e-4)  # fewer than one allowed: strictly under the nearest impostor
    assert int(np.sum(impostor <= t)) == 0
    assert t < impostor.min()


def test_fmr_fnmr_and_eer_on_overlapping_sets() -> None:
    genuine = np.array([0.1, 0.2, 0.3, 0.6])
    impostor = np.array([0.5, 0.7, 0.8, 0.9])
    assert fmr_fnmr(genuine, impostor, 0.55) == (0.25, 0.25)
    eer, t = equal_error_rate(genuine, impostor)
    assert eer == pytest.approx(0.25)
    assert 0.5 <= t < 0.6


def test_fpir_treats_each_identity_as_a_stranger() -> None:
    e = np.array([[1, 0], [0.99, 0.141], [0, 1]], dtype=np.float32)  # a and b are near, c is far
    labels = ["a", "b", "c"]
    assert fpir_at(e, labels, 0.05) == pytest.approx(2 / 3)
    assert fpir_at(e, labels, 0.001) == 0.0


def test_calibrate_reports_every_operating_point() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(20, 64))
    e = np.concatenate([c + 0.3 * rng.normal(size=(5, 64)) for c in centres])
    labels = [str(i) for i in range(20) for _ in range(5)]
    cal = calibrate("test", e, labels, failed=[])
    assert cal.genuine_pairs == 20 * 10 and cal.impostor_pairs == 100 * 99 // 2 - 200
    assert [p.fmr_target for p in cal.operating_points] == [1e-2, 1e-3, 1e-4]
    for p in cal.operating_points:
        assert p.fmr <= p.fmr_target
    assert cal.eer < 0.05  # well-separated clusters
