"""Calibrated decisions: target error rates in, distance thresholds out.

A calibration file (`calibrations/<model_id>.json`, written by `facegate calibrate --write`) describes one model's
genuine and impostor cosine-distance distributions, fitted on the fit part of `../shared/faces/calib` (the
held-back identities are never read by the fit). The impostor side has an explicit tail model: below the
distance `u` that a fraction `p_u` of impostor pairs fall under, the count of pairs is too small to read rates
off, so a generalised Pareto distribution (GPD) of the excess `u - d` carries the false-match rate (FMR) down
to the values 1:K needs (1e-6 and below). Bootstrap replicates of the fit (identities resampled) give each
estimate its uncertainty.

1:K: a stranger is compared with every template in the gallery, so the chance that *some* template is close
grows with the gallery: FPIR(t, n) = 1 - (1 - FMR(t))^n for n templates. Counting templates rather than
attendees is conservative for attendees with several photos (their templates are correlated), so the measured
FPIR sits at or under the target. The identify threshold therefore moves with the gallery: it is the distance
whose FMR is 1 - (1 - target_fpir)^(1/n).
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

CALIBRATION_VERSION = 1
DEFAULT_TARGET_FPIR = 0.003  # NIST FRTE's access-control point: about 1 stranger in 333 admitted
DEFAULT_TARGET_FMR = 1e-3  # 1:1: an impostor also needs the stolen ticket
# An expert's explicit distance is refused (unless forced) when its calibrated FMR is above this: a typo such
# as 0.83 for 0.083 would otherwise open the gate to nearly anyone.
MAX_OVERRIDE_FMR = 1e-2


class TailFit(BaseModel):
    """GPD of the excess y = u - d for impostor distances d <= u: P(D <= t) = p_u * (1 + xi (u - t) / sigma)^(-1/xi)."""

    model_config = ConfigDict(frozen=True)

    u: float
    p_u: float
    xi: float
    sigma: float

    def fmr(self, t: float) -> float:
        """FMR at threshold t <= u (the caller handles t > u)."""
        y = max(self.u - t, 0.0)
        if abs(self.xi) < 1e-9:
            return self.p_u * math.exp(-y / self.sigma)
        base = 1.0 + self.xi * y / self.sigma
        if base <= 0.0:  # beyond the fitted distribution's end point (xi < 0): no impostor gets that close
            return 0.0
        return self.p_u * base ** (-1.0 / self.xi)


def per_comparison(target: float, comparisons: int) -> float:
    """The per-comparison rate that keeps `comparisons` independent chances at `target` in all: 1 - (1 - target)^(1/n),
    computed exactly for tiny rates."""
    return -math.expm1(math.log1p(-target) / max(comparisons, 1))


class Calibration(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: int = CALIBRATION_VERSION
    model_id: str
    created: str = Field(description="UTC date of the fit")
    data: str = Field(description="what it was fitted on, and the split")
    fit_identities: int
    fit_photos: int
    held_back_identities: int
    genuine_pairs: int
    impostor_pairs: int
    tail: TailFit
    # Empirical impostor CDF above u: FMR at increasing distances (log-spaced in FMR from p_u to 1).
    impostor_grid: list[tuple[float, float]]
    # Genuine distances: quantiles at 0, 0.005, ..., 1 for one template, and for the best of two.
    genuine_quantiles: list[float]
    genuine_best_of_two: list[float]
    bootstrap: list[TailFit] = Field(description="the tail refitted on identity-resampled fit sets")
    margin: float = Field(0.0, description="the ambiguity margin chosen on the fit split (0: only exact ties)")
    margin_fpir_factor: list[tuple[int, float]] = Field(
        default=[(1, 1.0)],
        description="(attendees, share of a stranger's would-be admits that survive the margin), measured on the "
        "fit split: with one attendee there is no second to be close to, with hundreds the margin refuses more",
    )

    def margin_factor(self, attendees: int) -> float:
        """The surviving share at this gallery size. Interpolated as the effective number of comparisons (size x
        share, which never falls as a gallery grows) in log-log; past the largest measured size the last share
        holds (it only falls with size, so that errs strict)."""
        n = max(attendees, 1)
        sizes = [math.log(k) for k, _ in self.margin_fpir_factor]
        effective = [math.log(k * f) for k, f in self.margin_fpir_factor]
        last_k, last_f = self.margin_fpir_factor[-1]
        if n >= last_k:
            return last_f
        return math.exp(float(np.interp(math.log(n), sizes, effective))) / n

    # -- FMR and its inverse ------------------------------------------------------------------------------
    def fmr(self, t: float, tail: TailFit | None = None) -> float:
        tail = tail or self.tail
        if t <= tail.u:
            return tail.fmr(t)
        xs = [tail.u] + [d for d, _ in self.impostor_grid if d > tail.u]
        ys = [tail.p_u] + [f for d, f in self.impostor_grid if d > tail.u]
        return float(np.interp(t, xs, ys, right=1.0))

    def threshold_at_fmr(self, target: float) -> float:
        """The largest distance whose FMR is at most `target` (bisection; FMR is non-decreasing in t)."""
        lo, hi = 0.0, 2.0
        if self.fmr(lo) > target:
            return 0.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if self.fmr(mid) <= target:
                lo = mid
            else:
                hi = mid
        return lo

    def fmr_interval(self, t: float) -> tuple[float, float]:
        """90% bootstrap interval of FMR at t."""
        values = sorted(self.fmr(t, b) for b in self.bootstrap) or [self.fmr(t)]
        return values[int(0.05 * (len(values) - 1))], values[math.ceil(0.95 * (len(values) - 1))]

    # -- 1:1 and 1:K ----------------------------------------------------------------------------------------
    def verify_threshold(self, target_fmr: float, templates: int = 1) -> float:
        """The 1:1 distance for an attendee with `templates` templates: the nearest of them decides, so each is a
        chance for an impostor holding their ticket, and the target is split over them as in 1:K."""
        return self.threshold_at_fmr(per_comparison(target_fmr, templates))

    def identify_threshold(
        self, target_fpir: float, templates: int, attendees: int | None = None, *, calibrated_margin: bool = True
    ) -> float:
        """The distance at which a gallery of `templates` templates (of `attendees` people; default one template
        each) admits strangers at `target_fpir`. Every template is a chance for a look-alike; with the calibrated
        margin in force, part of those would-be admits are refused as ambiguous (a share that depends on how many
        *people* there are to be near), so the threshold may be laxer."""
        n = max(templates, 1)
        if calibrated_margin:
            target_fpir = min(target_fpir / self.margin_factor(attendees if attendees else n), 0.5)
        return self.threshold_at_fmr(per_comparison(target_fpir, n))

    @staticmethod
    def fpir_from_fmr(fmr: float, templates: int) -> float:
        return -math.expm1(max(templates, 1) * math.log1p(-min(fmr, 1.0 - 1e-15)))

    def fpir(self, t: float, templates: int) -> float:
        return self.fpir_from_fmr(self.fmr(t), templates)

    def fpir_interval(self, t: float, templates: int) -> tuple[float, float]:
        lo, hi = self.fmr_interval(t)
        return self.fpir_from_fmr(lo, templates), self.fpir_from_fmr(hi, templates)

    def fnmr(self, t: float, templates_per_attendee: float = 1.0) -> float:
        """Share of genuine comparisons over t: one template, or the best of two when attendees have two or more."""
        q = self.genuine_best_of_two if templates_per_attendee >= 2 else self.genuine_quantiles
        levels = np.linspace(0.0, 1.0, len(q))
        return float(1.0 - np.interp(t, q, levels, left=0.0, right=1.0))


@cache
def load_calibration(model_id: str) -> Calibration | None:
    """The calibration shipped in this package for `model_id` (None when there is none)."""
    ref = resources.files("services.contracts").joinpath("calibrations", f"{model_id}.json")
    if not ref.is_file():
        return None
    cal = Calibration.model_validate(json.loads(ref.read_text()))
    if cal.version != CALIBRATION_VERSION or cal.model_id != model_id:
        raise ValueError(f"calibration file for {model_id} is version {cal.version} of {cal.model_id!r}")
    return cal
