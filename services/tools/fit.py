"""Fitting a calibration, and measuring one on data it never saw.

The split is by identity and fixed: an identity is held back when a hash of its name says so (60%), so every
run, on every machine, fits on the same people and measures on the others, and adding identities to the set
never moves an existing one across the line.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from services.contracts.calibration import Calibration, TailFit

HELD_BACK_SHARE = 0.5
TAIL_P = 2e-3  # the GPD carries FMR below the impostor quantile at this level
BOOTSTRAP = 200
GRID_LEVELS = np.geomspace(TAIL_P, 1.0, 60)


def is_held_back(identity: str) -> bool:
    h = int.from_bytes(hashlib.sha256(f"facegate-calib-split:{identity}".encode()).digest()[:4], "big")
    return h / 2**32 < HELD_BACK_SHARE


def held_back_mask(labels: np.ndarray) -> np.ndarray:
    return np.asarray([is_held_back(str(x)) for x in labels])


# A trained head is fitted on half of the fit identities and every score with a head is calibrated on the other
# half: calibrating on the identities a head was trained on put the head's held-back FPIR at 2.8x the target (its
# training pushed exactly those identities' impostors apart), a fused score's with the head at 2.1x.
HEAD_TRAINING_SHARE = 0.5


def is_head_training(identity: str) -> bool:
    """Among the fit identities (`is_held_back` false): the half a head trains on."""
    h = int.from_bytes(hashlib.sha256(f"facegate-head-split:{identity}".encode()).digest()[:4], "big")
    return h / 2**32 < HEAD_TRAINING_SHARE


def head_training_mask(labels: np.ndarray) -> np.ndarray:
    return np.asarray([is_head_training(str(x)) for x in labels]) & ~held_back_mask(labels)


# -- empirical pair arithmetic ------------------------------------------------------------------------------
def pair_distances(embeddings: np.ndarray, labels: list[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distances of all unordered pairs, split into genuine and impostor."""
    dist = _cosine_distances(np.asarray(embeddings, dtype=np.float64))
    lab = np.asarray(labels)
    iu = np.triu_indices(len(lab), k=1)
    same = lab[iu[0]] == lab[iu[1]]
    d = dist[iu]
    return d[same], d[~same]


def fmr_fnmr(genuine: np.ndarray, impostor: np.ndarray, t: float) -> tuple[float, float]:
    """A pair matches when its distance is <= t."""
    return float(np.mean(impostor <= t)), float(np.mean(genuine > t))


def empirical_threshold_at_fmr(impostor: np.ndarray, target: float) -> float:
    """The largest threshold whose FMR on these impostors is <= target (no tail model: at most floor(target n)
    impostors fall at or under it; where target n < 1 this is just under the nearest impostor)."""
    s = np.sort(impostor)
    k = math.floor(target * len(s))
    if k >= len(s):
        return float(s[-1])
    return float(np.nextafter(s[k], -np.inf))


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(EER, its threshold), on a grid of candidate thresholds fine enough for two digits."""
    candidates = np.quantile(np.concatenate([genuine, impostor]), np.linspace(0, 1, 4001))
    g, i = np.sort(genuine), np.sort(impostor)
    fmr = np.searchsorted(i, candidates, side="right") / len(i)
    fnmr = 1.0 - np.searchsorted(g, candidates, side="right") / len(g)
    j = int(np.argmin(np.abs(fmr - fnmr)))
    return float((fmr[j] + fnmr[j]) / 2), float(candidates[j])


# -- generalised Pareto fit (no SciPy here) ------------------------------------------------------------------
def fit_gpd(y: np.ndarray, w: np.ndarray | None = None) -> tuple[float, float]:
    """Weighted maximum-likelihood (xi, sigma) of a GPD on excesses y >= 0 (Grimshaw's profile in theta = xi/sigma).

    For a fixed theta the likelihood is maximised at xi = mean(log(1 + theta y)), sigma = xi / theta, leaving a
    one-dimensional search, done on a grid fine enough for rates quoted to two digits.
    """
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=np.float64)
    w = w / w.sum()
    ymax, mean = float(y.max()), float((w * y).sum())
    best = (0.0, mean, -math.log(mean) - 1.0)  # theta -> 0: the exponential, xi = 0, sigma = mean
    # theta > -1/ymax keeps every 1 + theta y positive; the upper end covers heavy tails (xi up to ~1).
    thetas = np.concatenate([-np.geomspace(1e-4, 1.0 - 1e-6, 300)[::-1] / ymax, np.geomspace(1e-4, 1e3, 300) / mean])
    for theta in thetas:
        xi = float((w * np.log1p(theta * y)).sum())
        if xi == 0.0 or xi / theta <= 0.0:
            continue
        sigma = xi / theta
        ll = -math.log(sigma) - 1.0 - xi
        if ll > best[2]:
            best = (xi, sigma, ll)
    return best[0], best[1]


def _tail(distances: np.ndarray, weights: np.ndarray) -> TailFit:
    """Fit the impostor tail on (weighted) distances: u is the weighted TAIL_P quantile."""
    order = np.argsort(distances)
    d, w = distances[order], weights[order]
    cum = np.cumsum(w) / w.sum()
    i = int(np.searchsorted(cum, TAIL_P))
    u = float(d[i])
    below = d <= u
    xi, sigma = fit_gpd(u - d[below], w[below])
    return TailFit(u=u, p_u=float(cum[i]), xi=xi, sigma=sigma)


def _cosine_distances(e: np.ndarray) -> np.ndarray:
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    return np.clip(1.0 - e @ e.T, 0.0, 2.0)


def _best_of_two(dist: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For identities with three or more photos: a probe's distance to the nearer of two other photos."""
    out = []
    for ident in np.unique(labels):
        idx = np.flatnonzero(labels == ident)
        if len(idx) < 3:
            continue
        for p in idx:
            others = rng.permutation(idx[idx != p])[:2]
            out.append(float(dist[p, others].min()))
    return np.asarray(out)


def _weighted_quantiles(d: np.ndarray, w: np.ndarray, levels: np.ndarray) -> np.ndarray:
    order = np.argsort(d)
    cum = np.cumsum(w[order]) / w.sum()
    return d[order][np.minimum(np.searchsorted(cum, levels), len(d) - 1)]


def fit_calibration(
    model_id: str, embeddings: np.ndarray, labels: np.ndarray, *, held_back_identities: int, data: str, seed: int = 0
) -> Calibration:
    """The calibration of one model from the fit split's embeddings (one row per photo with a face).

    Impostor pairs are weighted so that each identity counts as one enrolled attendee: the pair (p, q) of
    identities A and B stands for "probe p against B's template" with weight 1/n_B and "probe q against A's
    template" with weight 1/n_A. Unweighted, the few identities with eight photos (often look-alike public
    figures) would count 64 times as much as those with one pair, and the tail would follow them.
    """
    rng = np.random.default_rng(seed)
    dist = _cosine_distances(embeddings)
    _, ident_idx, counts = np.unique(labels, return_inverse=True, return_counts=True)
    iu = np.triu_indices(len(labels), k=1)
    same = ident_idx[iu[0]] == ident_idx[iu[1]]
    genuine = dist[iu][same]
    imp_d = dist[iu][~same]
    imp_a, imp_b = ident_idx[iu[0]][~same], ident_idx[iu[1]][~same]
    imp_w = 1.0 / counts[imp_a] + 1.0 / counts[imp_b]

    tail = _tail(imp_d, imp_w)
    grid_q = _weighted_quantiles(imp_d, imp_w, GRID_LEVELS)
    impostor_grid = [(round(float(q), 6), float(p)) for q, p in zip(grid_q, GRID_LEVELS, strict=True)]

    # Bootstrap over identities: a pair's weight is multiplied by how often each of its two identities was
    # drawn. Only the pairs near the tail matter for the refit, so keep those (plus the total weight).
    n_ident = int(ident_idx.max()) + 1
    near = imp_d <= np.quantile(imp_d, min(1.0, TAIL_P * 20))
    d_near, a_near, b_near, w0_near = imp_d[near], imp_a[near], imp_b[near], imp_w[near]
    order = np.argsort(d_near)
    d_near, a_near, b_near, w0_near = d_near[order], a_near[order], b_near[order], w0_near[order]
    reps = []
    for _ in range(BOOTSTRAP):
        draws = np.bincount(rng.integers(0, n_ident, n_ident), minlength=n_ident).astype(np.float64)
        total = float((imp_w * draws[imp_a] * draws[imp_b]).sum())
        w_near = w0_near * draws[a_near] * draws[b_near]
        cum = np.cumsum(w_near) / total
        i = min(int(np.searchsorted(cum, TAIL_P)), len(d_near) - 1)
        u = float(d_near[i])
        below = (d_near <= u) & (w_near > 0)
        xi, sigma = fit_gpd(u - d_near[below], w_near[below])
        reps.append(TailFit(u=u, p_u=float(cum[i]), xi=xi, sigma=sigma))

    levels = np.linspace(0.0, 1.0, 201)
    return Calibration(
        model_id=model_id,
        created=datetime.now(UTC).date().isoformat(),
        data=data,
        fit_identities=n_ident,
        fit_photos=len(labels),
        held_back_identities=held_back_identities,
        genuine_pairs=len(genuine),
        impostor_pairs=len(imp_d),
        tail=tail,
        impostor_grid=impostor_grid,
        genuine_quantiles=[round(float(x), 6) for x in np.quantile(genuine, levels)],
        genuine_best_of_two=[round(float(x), 6) for x in np.quantile(_best_of_two(dist, labels, rng), levels)],
        bootstrap=reps,
        margin=0.0,
        margin_fpir_factor=[(1, 1.0)],
    )


# -- measuring on held-back identities ------------------------------------------------------------------------
@dataclass
class Rate:
    """A rate with its count and a 95% Wilson interval."""

    errors: int
    trials: int

    @property
    def value(self) -> float:
        return self.errors / self.trials if self.trials else float("nan")

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        n, p = self.trials, self.value
        if n == 0:
            return (float("nan"), float("nan"))
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def __add__(self, other: Rate) -> Rate:
        return Rate(self.errors + other.errors, self.trials + other.trials)

    def text(self) -> str:
        lo, hi = self.interval()
        return f"{self.value:.4f} ({self.errors}/{self.trials}; 95% CI {lo:.4f}-{hi:.4f})"


def verify_rates(embeddings: np.ndarray, labels: np.ndarray, t: float) -> tuple[Rate, Rate]:
    """(FMR, FNMR) of all pairs at threshold t."""
    dist = _cosine_distances(embeddings)
    iu = np.triu_indices(len(labels), k=1)
    same = labels[iu[0]] == labels[iu[1]]
    d = dist[iu]
    return Rate(int((d[~same] <= t).sum()), int((~same).sum())), Rate(int((d[same] > t).sum()), int(same.sum()))


@dataclass
class IdentifyRun:
    """Counts of simulated 1:K events (gallery of K identities, the rest never enrolled)."""

    k: int
    templates_per_attendee: int
    threshold: float
    fpir: Rate  # non-mated probes admitted as anyone
    fnir: Rate  # mated probes not admitted as themselves
    wrong_person: Rate  # mated probes admitted as someone else


def simulate_identify(
    embeddings: np.ndarray,
    labels: np.ndarray,
    cal: Calibration,
    *,
    k: int,
    templates_per_attendee: int = 1,
    target_fpir: float,
    margin: float | None = None,
    threshold: float | None = None,
    repeats: int = 10,
    seed: int = 0,
) -> IdentifyRun:
    """Events of K attendees drawn from these identities, each repeat a fresh draw; the decision rule is the
    gateway's: the nearest attendee within the threshold, and ahead of the second by more than the margin."""
    margin = cal.margin if margin is None else margin
    rng = np.random.default_rng(seed)
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    idents = np.unique(labels)
    by_ident = {i: np.flatnonzero(labels == i) for i in idents}
    eligible = np.asarray([i for i in idents if len(by_ident[i]) > templates_per_attendee])
    fpir, fnir, wrong = Rate(0, 0), Rate(0, 0), Rate(0, 0)
    if threshold is None:
        calibrated = margin == cal.margin
        threshold = cal.identify_threshold(target_fpir, k * templates_per_attendee, k, calibrated_margin=calibrated)
    for _ in range(repeats):
        gallery_ids = rng.choice(eligible, size=k, replace=False)
        in_gallery = set(gallery_ids.tolist())
        tmpl_rows, tmpl_owner, mated = [], [], []
        for a, ident in enumerate(gallery_ids):
            rows = rng.permutation(by_ident[ident])
            tmpl_rows += rows[:templates_per_attendee].tolist()
            tmpl_owner += [a] * templates_per_attendee
            mated += [(int(r), a) for r in rows[templates_per_attendee:]]
        non_mated = [int(r) for i in idents if i not in in_gallery for r in by_ident[i]]
        owner = np.asarray(tmpl_owner)
        probes = np.asarray(non_mated + [r for r, _ in mated])
        d = 1.0 - e[probes] @ e[tmpl_rows].T  # [P, K*T]
        per_att = np.full((len(probes), k), np.inf)
        np.minimum.at(per_att.T, owner, d.T)  # nearest template of each attendee
        order = np.argsort(per_att, axis=1)[:, :2]
        best = per_att[np.arange(len(probes)), order[:, 0]]
        second = per_att[np.arange(len(probes)), order[:, 1]] if k > 1 else np.full(len(probes), np.inf)
        admitted = (best <= threshold) & (second - best > margin)
        n_non = len(non_mated)
        fpir += Rate(int(admitted[:n_non].sum()), n_non)
        truth = np.asarray([a for _, a in mated])
        got = order[n_non:, 0]
        adm_m = admitted[n_non:]
        fnir += Rate(int((~(adm_m & (got == truth))).sum()), len(mated))
        wrong += Rate(int((adm_m & (got != truth)).sum()), len(mated))
    return IdentifyRun(k, templates_per_attendee, threshold, fpir, fnir, wrong)


MARGIN_STEPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)  # in units of the model's 1:1 threshold at FMR 1e-3
FACTOR_SIZES = (3, 10, 30, 100, 300)


def margin_survival(
    embeddings: np.ndarray, labels: np.ndarray, cal: Calibration, *, margin: float, sizes: tuple[int, ...]
) -> float:
    """Share of a stranger's admits at a lax threshold (FPIR 0.05 without margin) that the margin lets through."""
    lax, with_m = Rate(0, 0), Rate(0, 0)
    for k in sizes:
        t = cal.identify_threshold(0.05, k, calibrated_margin=False)
        lax += simulate_identify(embeddings, labels, cal, k=k, target_fpir=0, margin=0.0, threshold=t).fpir
        with_m += simulate_identify(embeddings, labels, cal, k=k, target_fpir=0, margin=margin, threshold=t).fpir
    return max(with_m.errors, 1) / max(lax.errors, 1) if margin > 0 else 1.0


def choose_margin(
    embeddings: np.ndarray, labels: np.ndarray, cal: Calibration, *, target_fpir: float, sizes: tuple[int, ...]
) -> tuple[Calibration, list[dict[str, float]]]:
    """The margin that gives the lowest FNIR at `target_fpir`, on the fit split only, with the share of false
    admits it leaves at each gallery size. A margin refuses a stranger whose two nearest attendees are about as
    close; a genuine attendee is usually far ahead of the second, so a margin costs few genuine admits. Whether
    it wins is measured: each candidate's threshold is re-derived so that all are compared at the same FPIR."""
    scale = cal.verify_threshold(1e-3)
    rows = []
    best: tuple[float, float] | None = None
    for step in MARGIN_STEPS:
        m = round(step * scale, 5)
        factor = margin_survival(embeddings, labels, cal, margin=m, sizes=sizes)
        candidate = cal.model_copy(update={"margin": m, "margin_fpir_factor": [(1, factor)]})
        fnir, fpir = Rate(0, 0), Rate(0, 0)
        for k in sizes:
            run = simulate_identify(embeddings, labels, candidate, k=k, target_fpir=target_fpir)
            fnir += run.fnir
            fpir += run.fpir
        rows.append({"margin": m, "fpir_factor": factor, "fnir": fnir.value, "fpir": fpir.value})
        if best is None or fnir.value < best[0] - 0.002:  # a smaller margin unless a larger one clearly wins
            best = (fnir.value, m)
    assert best is not None
    margin = best[1]
    n_ident = len(np.unique(labels))
    table = [(1, 1.0)] + [
        (k, round(margin_survival(embeddings, labels, cal, margin=margin, sizes=(k,)), 4))
        for k in FACTOR_SIZES
        if k <= n_ident - 100
    ]
    # The share only falls as a gallery grows (more second neighbours), but the effective number of comparisons,
    # size x share, must not: a larger event never gets a laxer threshold. Noise may break either; clamp both.
    clamped: list[tuple[int, float]] = []
    for k, f in table:
        if clamped:
            prev_k, prev_f = clamped[-1]
            f = min(max(f, prev_k * prev_f / k), prev_f)
        clamped.append((k, round(f, 4)))
    table = clamped
    return cal.model_copy(update={"margin": margin, "margin_fpir_factor": table}), rows
