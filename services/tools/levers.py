"""`facegate levers`: what each accuracy lever buys on identities nothing was fitted on, and what it costs.

    facegate levers --faces ../shared/faces/calib [--json bench/out/levers.json]

Every lever is a *score*: a way to turn a probe photo and an attendee's enrolment photos into one distance.
Each score is calibrated exactly as `facegate calibrate` calibrates a model (`fit.fit_calibration` and
`fit.choose_margin` on the fit identities only: targets in, thresholds out) and measured on the held-back
identities (`fit.is_held_back`) in simulated 1:K events, as an organiser's event would see it:

- the default model alone (`dlib-resnet-128`), the second model alone (`facenet-casia-512`);
- flip test-time augmentation: the embedding of the chip and of its mirror image, averaged and re-normalised;
- score fusion: each model's cosine distance z-normalised with the impostor mean and spread of the fit
  identities, then averaged (equal weights, or the weight that is best on the fit identities). A weighted mean
  of cosine distances is itself the cosine distance of the concatenated embeddings scaled by the square roots
  of the weights, so a fused score goes through the same calibration, margin and gallery code as any model;
- the cascade: the default model decides the clear cases; only a frame whose best dlib distance falls in a band
  around the dlib threshold is embedded by the second model, and its top candidates are re-scored with the
  fused, calibrated score. The band is chosen on the fit identities;
- several templates per attendee: best-of (the nearest enrolment photo, today's matcher), the mean
  embedding, or both;
- a triplet-loss adaptation head (`facegate train`), when an artefact is given.

Rates come with their counts and 95% Wilson intervals (`fit.Rate`). Two views of 1:K at each K:
*calibrated* (the threshold a deployment would use, from the fit-part calibration; FPIR and FNIR both measured)
and *at FPIR 0.003* (NIST's reading: the threshold set on the held-back strangers' scores so that exactly 0.3%
are admitted, which compares levers at the same FPIR). Verify: TAR at FMR 1e-3 and 1e-4 over all held-back
pairs, thresholds set on the held-back impostor pairs. Cost: the CPU time per frame of each model's embedding
(and of the mirror), measured in the same run on the same chips.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from services.contracts.calibration import DEFAULT_TARGET_FPIR, Calibration
from services.tools import fit
from services.tools.faceset import FaceSet, embed_faceset

DLIB = "dlib-resnet-128"
FACENET = "facenet-casia-512"
TemplateMode = Literal["best", "mean", "both"]
SIZES = (100, 200, 300, 400)
FPIR_POINTS = (0.003, 0.01)
FMR_POINTS = (1e-3, 1e-4)


def normalise(e: np.ndarray) -> np.ndarray:
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def flip_average(e: np.ndarray, e_flip: np.ndarray) -> np.ndarray:
    """Flip test-time augmentation: the mean of a chip's embedding and its mirror's, re-normalised."""
    return normalise(normalise(e) + normalise(e_flip))


# -- fusion ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fusion:
    """fused distance = a * d_first + (1 - a) * d_second, a = the first model's share once each distance is
    z-normalised by the fit identities' impostor spread (the means only shift the score)."""

    weight: float  # w in w * z_first + (1 - w) * z_second
    mean: tuple[float, float]
    std: tuple[float, float]

    @property
    def a(self) -> float:
        s1, s2 = self.weight / self.std[0], (1.0 - self.weight) / self.std[1]
        return s1 / (s1 + s2)

    def embed(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Embeddings whose cosine distance is the fused distance (unit norm: a + (1 - a) = 1)."""
        return np.concatenate([math.sqrt(self.a) * normalise(first), math.sqrt(1 - self.a) * normalise(second)], 1)

    def distance(self, d_first: np.ndarray, d_second: np.ndarray) -> np.ndarray:
        return self.a * d_first + (1.0 - self.a) * d_second


def impostor_stats(e: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    _, imp = fit.pair_distances(e, labels)
    return float(imp.mean()), float(imp.std())


def fit_fusion(first: np.ndarray, second: np.ndarray, labels: np.ndarray, *, fit_weight: bool) -> Fusion:
    """Z-normalisation from the (fit-part) impostor distances; the weight 0.5, or the one of a grid that gives
    the highest TAR at FMR 1e-3 on these (fit-part) pairs."""
    (m1, s1), (m2, s2) = impostor_stats(first, labels), impostor_stats(second, labels)
    if not fit_weight:
        return Fusion(0.5, (m1, m2), (s1, s2))
    best: tuple[float, float] | None = None
    for w in np.linspace(0.2, 0.8, 13):
        fu = Fusion(float(w), (m1, m2), (s1, s2))
        g, imp = fit.pair_distances(fu.embed(first, second), labels)
        tar = float(np.mean(g <= fit.empirical_threshold_at_fmr(imp, 1e-3)))
        if best is None or tar > best[0]:
            best = (tar, float(w))
    assert best is not None
    return Fusion(best[1], (m1, m2), (s1, s2))


# -- simulated events -----------------------------------------------------------------------------------------
@dataclass
class Event:
    """One simulated event: gallery rows and their owners (0..k-1), probe rows (strangers first), mated truth."""

    k: int
    tmpl_rows: np.ndarray
    tmpl_owner: np.ndarray
    probes: np.ndarray
    n_non: int
    truth: np.ndarray  # [mated probes] the attendee each mated probe is


def draw_events(
    labels: np.ndarray, *, k: int, templates: int, repeats: int, seed: int = 0, probe_skip: int | None = None,
    min_photos: int | None = None,
) -> list[Event]:  # fmt: skip
    """Events of K attendees with `templates` photos each; their remaining photos are mated probes, every photo
    of an identity not in the gallery a stranger. `probe_skip` (>= templates): an attendee's probes are the
    photos after this many, so that runs with 1, 2, 3 templates see the same probes; `min_photos`: only
    identities with at least this many photos can be attendees."""
    rng = np.random.default_rng(seed)
    skip = templates if probe_skip is None else probe_skip
    idents = np.unique(labels)
    by_ident = {i: np.flatnonzero(labels == i) for i in idents}
    need = max(skip + 1, min_photos or 0)
    eligible = np.asarray([i for i in idents if len(by_ident[i]) >= need])
    events = []
    for _ in range(repeats):
        gallery_ids = rng.choice(eligible, size=k, replace=False)
        in_gallery = set(gallery_ids.tolist())
        rows, owner, mated, truth = [], [], [], []
        for a, ident in enumerate(gallery_ids):
            perm = rng.permutation(by_ident[ident])
            rows += perm[:templates].tolist()
            owner += [a] * templates
            mated += perm[skip:].tolist()
            truth += [a] * len(perm[skip:])
        non = [int(r) for i in idents if i not in in_gallery for r in by_ident[i]]
        events.append(
            Event(k, np.asarray(rows), np.asarray(owner), np.asarray(non + mated), len(non), np.asarray(truth))
        )
    return events


def per_attendee(e: np.ndarray, ev: Event, mode: TemplateMode = "best") -> np.ndarray:
    """[probes, K] distance of each probe to each attendee: the nearest template (best), the distance to the
    normalised mean of the attendee's templates (mean), or the smaller of the two (both)."""
    e = normalise(e)
    p = e[ev.probes]
    out = np.full((len(ev.probes), ev.k), np.inf)
    if mode in ("best", "both"):
        d = 1.0 - p @ e[ev.tmpl_rows].T
        np.minimum.at(out.T, ev.tmpl_owner, d.T)
    if mode in ("mean", "both"):
        sums = np.zeros((ev.k, e.shape[1]))
        np.add.at(sums, ev.tmpl_owner, e[ev.tmpl_rows])
        out = np.minimum(out, 1.0 - p @ normalise(sums).T)
    return out


@dataclass
class Outcome:
    """Per probe: the nearest attendee, its distance, the gap to the second; strangers first."""

    best: np.ndarray
    gap: np.ndarray
    got: np.ndarray
    n_non: int
    truth: np.ndarray

    @staticmethod
    def of(per_att: np.ndarray, ev: Event) -> Outcome:
        order = np.argsort(per_att, axis=1)[:, :2]
        rows = np.arange(len(per_att))
        best = per_att[rows, order[:, 0]]
        second = per_att[rows, order[:, 1]] if per_att.shape[1] > 1 else np.full(len(per_att), np.inf)
        return Outcome(best, second - best, order[:, 0], ev.n_non, ev.truth)


def templates_in_gallery(k: int, templates: int, mode: TemplateMode) -> int:
    """What the threshold counts as chances for a look-alike: every template, the means, or both."""
    return {"best": k * templates, "mean": k, "both": k * (templates + 1 if templates > 1 else 1)}[mode]


@dataclass
class IdentifyResult:
    k: int
    templates: int
    mode: str
    threshold: float
    fpir: fit.Rate
    fnir: fit.Rate
    wrong: fit.Rate
    rank1: fit.Rate  # mated probes whose nearest attendee is someone else (closed-set rank-1 miss)
    fnir_at: dict[float, fit.Rate] = field(default_factory=dict)  # FNIR at the held-back threshold for FPIR x
    second_model_share: dict[str, fit.Rate] = field(default_factory=dict)  # cascade only


def measure(
    outcomes: list[Outcome], threshold: float, margin: float, k: int, templates: int, mode: str
) -> IdentifyResult:
    fpir, fnir, wrong, rank1 = fit.Rate(0, 0), fit.Rate(0, 0), fit.Rate(0, 0), fit.Rate(0, 0)
    non_scores, mated = [], []
    for o in outcomes:
        admitted = (o.best <= threshold) & (o.gap > margin)
        n = o.n_non
        right = o.got[n:] == o.truth
        fpir += fit.Rate(int(admitted[:n].sum()), n)
        fnir += fit.Rate(int((~(admitted[n:] & right)).sum()), len(o.truth))
        wrong += fit.Rate(int((admitted[n:] & ~right).sum()), len(o.truth))
        rank1 += fit.Rate(int((~right).sum()), len(o.truth))
        # A stranger is admitted at threshold t when best <= t and the margin holds: its score is best, or never.
        non_scores.append(np.where(o.gap[:n] > margin, o.best[:n], np.inf))
        mated.append(np.where((o.gap[n:] > margin) & right, o.best[n:], np.inf))
    non, m = np.concatenate(non_scores), np.concatenate(mated)
    at = {}
    for x in FPIR_POINTS:
        t = fit.empirical_threshold_at_fmr(non, x)
        at[x] = fit.Rate(int((m > t).sum()), len(m))
    return IdentifyResult(k, templates, mode, threshold, fpir, fnir, wrong, rank1, at)


def identify(
    e: np.ndarray, labels: np.ndarray, cal: Calibration, *, k: int, templates: int = 1, mode: TemplateMode = "best",
    repeats: int = 20, seed: int = 0, probe_skip: int | None = None, min_photos: int | None = None,
    target_fpir: float = DEFAULT_TARGET_FPIR,
) -> IdentifyResult:  # fmt: skip
    events = draw_events(
        labels, k=k, templates=templates, repeats=repeats, seed=seed, probe_skip=probe_skip, min_photos=min_photos
    )
    t = cal.identify_threshold(target_fpir, templates_in_gallery(k, templates, mode), k)
    return measure([Outcome.of(per_attendee(e, ev, mode), ev) for ev in events], t, cal.margin, k, templates, mode)


def calibrate_score(score_id: str, e_fit: np.ndarray, labels_fit: np.ndarray, held_identities: int) -> Calibration:
    """`facegate calibrate`'s fit for any score: the tail, the genuine quantiles and the margin, fit part only."""
    cal = fit.fit_calibration(score_id, e_fit, labels_fit, held_back_identities=held_identities, data="fit part")
    n = len(np.unique(labels_fit))
    sizes = tuple(k for k in (100, 200) if k < n - 100)
    cal, _ = fit.choose_margin(e_fit, labels_fit, cal, target_fpir=DEFAULT_TARGET_FPIR, sizes=sizes)
    return cal


def tar_at_fmr(e: np.ndarray, labels: np.ndarray) -> dict[float, fit.Rate]:
    """1:1 on all pairs: genuine pairs accepted at the threshold where the impostor pairs' FMR is x (the
    threshold is read off these same pairs: a DET point, not a calibrated decision). Rate counts the misses."""
    g, imp = fit.pair_distances(e, labels)
    return {x: fit.Rate(int((g > fit.empirical_threshold_at_fmr(imp, x)).sum()), len(g)) for x in FMR_POINTS}


# -- the cascade ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Band:
    """The second model is asked when the first model's best distance d is at most hi, unless d <= lo and the
    nearest attendee is ahead of the second by the first model's margin (a clear admit)."""

    lo: float
    hi: float
    top: int = 5  # candidates re-scored with the fused distance


def cascade_outcome(
    first: np.ndarray, second: np.ndarray, fusion: Fusion, ev: Event, band: Band, first_threshold: float,
    first_margin: float, fused_threshold: float, mode: TemplateMode = "best",
) -> tuple[Outcome, np.ndarray, np.ndarray]:  # fmt: skip
    """The cascade as one Outcome in fused-distance units, and which probes needed the second model.

    Clear cases keep the first model's decision, mapped onto the fused scale: an admit (d <= lo and ahead by
    the first model's margin) scores d x fused_threshold / first_threshold (admitted at the calibrated
    threshold, since lo < first_threshold; when a reading at a fixed FPIR moves the fused threshold, the clear
    region moves with it, so the cascade has one knob), anything else with d > hi scores +inf (never admitted).
    In the band, the first model's `top` nearest attendees are re-scored with the fused
    distance (the second model embeds the probe once; the gallery's second-model templates are stored) and the
    fused rule decides: nearest within the fused threshold and ahead of the next re-scored one by the margin."""
    d1 = per_attendee(first, ev, mode)
    o1 = Outcome.of(d1, ev)
    clear_admit = (o1.best <= band.lo) & (o1.gap > first_margin)
    in_band = (o1.best <= band.hi) & ~clear_admit  # includes the first model's ambiguous near matches
    best = np.where(clear_admit, o1.best * (fused_threshold / first_threshold), np.inf)
    gap = np.full(len(best), np.inf)
    got = o1.got.copy()
    idx = np.flatnonzero(in_band)
    if len(idx):
        sub = Event(ev.k, ev.tmpl_rows, ev.tmpl_owner, ev.probes[idx], 0, ev.truth)
        d2 = per_attendee(second, sub, mode)
        top = np.argsort(d1[idx], axis=1)[:, : band.top]
        rows = np.arange(len(idx))[:, None]
        fused = fusion.distance(d1[idx][rows, top], d2[rows, top])
        order = np.argsort(fused, axis=1)
        f_best = fused[rows[:, 0], order[:, 0]]
        f_second = fused[rows[:, 0], order[:, 1]] if top.shape[1] > 1 else np.full(len(idx), np.inf)
        best[idx], gap[idx] = f_best, f_second - f_best
        got[idx] = top[rows[:, 0], order[:, 0]]
    return Outcome(best, gap, got, ev.n_non, ev.truth), in_band[: ev.n_non], in_band[ev.n_non :]


def cascade_identify(
    first: np.ndarray, second: np.ndarray, labels: np.ndarray, fusion: Fusion, band: Band, cal_first: Calibration,
    cal_fused: Calibration, *, k: int, repeats: int = 20, seed: int = 0, target_fpir: float = DEFAULT_TARGET_FPIR,
) -> IdentifyResult:  # fmt: skip
    events = draw_events(labels, k=k, templates=1, repeats=repeats, seed=seed)
    t1 = cal_first.identify_threshold(target_fpir, k, k)
    t = cal_fused.identify_threshold(target_fpir, k, k)
    outcomes, share_non, share_mated = [], fit.Rate(0, 0), fit.Rate(0, 0)
    for ev in events:
        o, b_non, b_mated = cascade_outcome(first, second, fusion, ev, _band_at(band, t1), t1, cal_first.margin, t)
        outcomes.append(o)
        share_non += fit.Rate(int(b_non.sum()), len(b_non))
        share_mated += fit.Rate(int(b_mated.sum()), len(b_mated))
    res = measure(outcomes, t, cal_fused.margin, k, 1, "cascade")
    res.second_model_share = {"strangers": share_non, "attendees": share_mated}
    return res


def _band_at(band: Band, t1: float) -> Band:
    """A band is stored relative to the first model's threshold at this K (lo, hi are multiples of it)."""
    return Band(band.lo * t1, band.hi * t1, band.top)


def choose_band(
    first: np.ndarray, second: np.ndarray, labels: np.ndarray, fusion: Fusion, cal_first: Calibration,
    cal_fused: Calibration, *, sizes: tuple[int, ...] = (100, 200),
) -> tuple[Band, list[dict[str, float]]]:  # fmt: skip
    """On the fit identities: the narrowest band (multiples of the first model's threshold) whose cascade FNIR
    at FPIR 0.003 is within one point of the full fusion's. Narrower bands ask the second model less often."""
    full = fit.Rate(0, 0)
    for k in sizes:
        full += identify(fusion.embed(first, second), labels, cal_fused, k=k, repeats=10).fnir_at[0.003]
    rows, chosen = [], None
    for lo in (0.5, 0.7, 0.8, 0.9):
        for hi in (1.2, 1.4, 1.6, 2.0, 2.5):
            b = Band(lo, hi)
            fnir, share = fit.Rate(0, 0), fit.Rate(0, 0)
            for k in sizes:
                r = cascade_identify(first, second, labels, fusion, b, cal_first, cal_fused, k=k, repeats=10)
                fnir += r.fnir_at[0.003]
                share += r.second_model_share["strangers"] + r.second_model_share["attendees"]
            rows.append({"lo": lo, "hi": hi, "fnir_at_0.003": fnir.value, "share": share.value})
            if fnir.value <= full.value + 0.01 and (chosen is None or share.value < chosen[1]):
                chosen = (b, share.value)
    if chosen is None:
        chosen = (Band(0.5, 2.5), 1.0)
    return chosen[0], rows


# -- cost -----------------------------------------------------------------------------------------------------
def measure_cost(folder: Path, *, photos: int = 24, rounds: int = 5) -> dict[str, float]:
    """Median seconds per face, CPU time of the process (all its threads; what a shared machine pays) and wall
    time, in one process and on the same photos: detection + chips (shared by both models), each model's
    embedding of one chip, and of the chip and its mirror (a batch of two). Interleaved rounds, so that a busy
    machine slows every entry alike."""
    from services.contracts.embedder import QualityProfile
    from services.embedder.pipeline import FacePipeline
    from services.embedder.settings import EmbedderSettings
    from services.tools.faceset import load_labelled

    items = load_labelled(folder)[:: max(1, len(load_labelled(folder)) // photos)][:photos]
    pipes = {m: FacePipeline(EmbedderSettings(model_id=m)) for m in (DLIB, FACENET)}
    for p in pipes.values():
        p.load()
    data = [path.read_bytes() for _, path in items]
    chips: dict[str, list[np.ndarray]] = {m: [] for m in pipes}
    timings: dict[str, list[float]] = {}

    def clock(name: str, fn: Any) -> None:
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        timings.setdefault(name, []).append(time.process_time() - c0)
        timings.setdefault(name + " (wall)", []).append(time.perf_counter() - w0)

    p0 = pipes[DLIB]
    for raw in data:  # the chips, once
        img = p0.decode(raw)
        dets = p0.detector.detect(img.rgb, None)[:1]
        for m, p in pipes.items():
            if dets:
                chips[m].append(p.analyse(img, dets, QualityProfile.GATE, 1).chips)
    for _ in range(rounds):
        for raw in data:
            clock("detect+chip", lambda raw=raw: _detect_and_chip(p0, raw))
        for m, p in pipes.items():
            for c in chips[m]:
                clock(m, lambda c=c, p=p: p.model.embed(c))
                clock(m + "+flip", lambda c=c, p=p: p.model.embed(np.concatenate([c, c[:, :, ::-1]])))
    return {name: float(np.median(v)) for name, v in timings.items()}


def _detect_and_chip(p: Any, raw: bytes) -> Any:
    from services.contracts.embedder import QualityProfile

    img = p.decode(raw)
    return p.analyse(img, p.detector.detect(img.rgb, None)[:1], QualityProfile.GATE, 1)


# -- the report -----------------------------------------------------------------------------------------------
@dataclass
class Score:
    """One lever (or a combination): embeddings whose cosine distance is the score, for every photo."""

    name: str
    e: np.ndarray
    cost: str  # how the cost per frame is made up
    head: bool = False  # uses a trained head: calibrated on the fit identities the head did not train on


def _rate(r: fit.Rate) -> dict[str, Any]:
    lo, hi = r.interval()
    return {"value": r.value, "errors": r.errors, "trials": r.trials, "ci95": [lo, hi]}


def result_json(name: str, r: IdentifyResult) -> dict[str, Any]:
    out = {
        "score": name, "k": r.k, "templates": r.templates, "mode": r.mode, "threshold": r.threshold,
        "fpir": _rate(r.fpir), "fnir": _rate(r.fnir), "wrong_person": _rate(r.wrong), "rank1_miss": _rate(r.rank1),
        "fnir_at_fpir": {str(x): _rate(v) for x, v in r.fnir_at.items()},
    }  # fmt: skip
    if r.second_model_share:
        out["second_model_share"] = {key: _rate(v) for key, v in r.second_model_share.items()}
    return out


def _pct(r: fit.Rate) -> str:
    lo, hi = r.interval()
    return f"{r.value:.1%} ({r.errors:,}/{r.trials:,}; {lo:.1%}-{hi:.1%})"


def load_scores(
    folder: Path, cache_dirs: list[Path], *, flips: bool = True
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Embeddings of every photo for each model (and their mirrors'), the labels and the has-a-face mask; reads
    the first cache that has them, embeds (and caches in the last) otherwise."""

    def get(model_id: str, flip: bool) -> FaceSet:
        return cached_faceset(folder, model_id, cache_dirs, flip=flip)

    d, f = get(DLIB, False), get(FACENET, False)
    if d.paths != f.paths:
        raise ValueError("the two models' face sets list different photos")
    out = {DLIB: d.embeddings, FACENET: f.embeddings}
    ok = d.has_face & f.has_face
    if flips:
        for m in (DLIB, FACENET):
            out[m + "+flip"] = get(m, True).embeddings
    return out, d.labels, ok


def cached_faceset(folder: Path, model_id: str, cache_dirs: list[Path], *, flip: bool = False) -> FaceSet:
    """`embed_faceset` reading the first of these caches that holds the set; embeds (and caches in the last one)
    only when none does, so a shared read-only cache is never written to."""
    for d in cache_dirs[:-1]:
        try:
            return embed_faceset(folder, model_id, d, flip=flip, pipeline=_NoPipeline())
        except _Missing:
            continue
    return embed_faceset(folder, model_id, cache_dirs[-1], flip=flip)


class _Missing(Exception):
    pass


class _NoPipeline:
    """Passed as `pipeline` to read a cache without ever embedding: any use means the cache is missing."""

    @property
    def descriptor(self) -> Any:
        raise _Missing


def run_levers(
    *, faces: str, cache_dirs: list[str], json_path: str | None, heads: list[str], cost: bool, flips: bool = True
) -> int:
    folder = Path(faces)
    t_start = time.perf_counter()
    raw, labels_all, ok = load_scores(folder, [Path(c) for c in cache_dirs], flips=flips)
    labels = labels_all[ok]
    raw = {k: v[ok] for k, v in raw.items()}
    held = fit.held_back_mask(labels)
    fit_m = ~held
    # Scores with a trained head are fitted (weights, calibration, band) on the fit identities it did not train on.
    head_fit_m = fit_m & ~fit.head_training_mask(labels)
    n_held = len(np.unique(labels[held]))
    print(
        f"{ok.sum()} photos with a face; fit: {len(np.unique(labels[fit_m]))} identities ({fit_m.sum()} photos), "
        f"held back: {n_held} identities ({held.sum()} photos)",
        flush=True,
    )
    d, f = normalise(raw[DLIB]), normalise(raw[FACENET])
    fusion = fit_fusion(d[fit_m], f[fit_m], labels[fit_m], fit_weight=False)
    fusion_w = fit_fusion(d[fit_m], f[fit_m], labels[fit_m], fit_weight=True)
    fused = f"fusion (w={fusion_w.weight:.2f} fitted)"
    print(f"fusion: z-normalised mean, dlib share of the distance a={fusion.a:.3f}; fitted weight "
          f"w={fusion_w.weight:.2f} (a={fusion_w.a:.3f})", flush=True)  # fmt: skip
    scores = [
        Score(DLIB, d, "dlib"),
        Score(FACENET, f, "facenet"),
        Score("fusion (z-mean)", fusion.embed(d, f), "dlib + facenet"),
        Score(fused, fusion_w.embed(d, f), "dlib + facenet"),
    ]
    report: dict[str, Any] = {"fusion": fusion.__dict__, "fusion_fitted": fusion_w.__dict__, "rows": [], "verify": {}}
    if flips:
        d_flip, f_flip = flip_average(d, raw[DLIB + "+flip"]), flip_average(f, raw[FACENET + "+flip"])
        fusion_flip = fit_fusion(d_flip[fit_m], f_flip[fit_m], labels[fit_m], fit_weight=True)
        report["fusion_flip"] = fusion_flip.__dict__
        scores[2:2] = [Score(DLIB + " + flip", d_flip, "dlib+flip"), Score(FACENET + " + flip", f_flip, "facenet+flip")]
        scores.append(
            Score(f"fusion + flip (w={fusion_flip.weight:.2f})", fusion_flip.embed(d_flip, f_flip), "both x2")
        )
    # Cascades: (name, the first model's embeddings, the second's, their fusion, the fused score's name).
    cascades = [("cascade", d, f, fusion_w, fused, DLIB)]
    for path in heads:
        from services.embedder.models.head import load_head

        h = load_head(Path(path))
        base = d if h.model_id == DLIB else f
        projected = h.apply(base)
        scores.append(Score(f"{h.model_id} + triplet head", projected, h.model_id, head=True))
        if h.model_id == FACENET:
            fu_h = fit_fusion(d[head_fit_m], projected[head_fit_m], labels[head_fit_m], fit_weight=True)
            report["fusion_head"] = fu_h.__dict__
            name_h = f"fusion, FaceNet with the head (w={fu_h.weight:.2f})"
            scores.append(Score(name_h, fu_h.embed(d, projected), "both", head=True))
            cascades.append(("cascade, FaceNet with the head", d, projected, fu_h, name_h, DLIB))
            if flips:
                # The head was trained on unflipped embeddings; it is applied to the flip average as it is.
                pf = h.apply(f_flip)
                fu_hf = fit_fusion(d_flip[head_fit_m], pf[head_fit_m], labels[head_fit_m], fit_weight=True)
                report["fusion_head_flip"] = fu_hf.__dict__
                name_hf = f"fusion + flip, FaceNet with the head (w={fu_hf.weight:.2f})"
                scores.append(Score(name_hf, fu_hf.embed(d_flip, pf), "both x2", head=True))
                cascades.append(("cascade + flip, FaceNet with the head", d_flip, pf, fu_hf, name_hf, DLIB + " + flip"))
    cals: dict[str, Calibration] = {}
    sizes_1 = [k for k in SIZES if k <= n_held - 100]
    for s in scores:
        m = head_fit_m if s.head else fit_m
        cal = calibrate_score(s.name, s.e[m], labels[m], n_held)
        cals[s.name] = cal
        tar = tar_at_fmr(s.e[held], labels[held])
        report["verify"][s.name] = {str(x): _rate(v) for x, v in tar.items()}
        for k in sizes_1:
            r = identify(s.e[held], labels[held], cal, k=k)
            report["rows"].append(result_json(s.name, r))
        print(f"  {s.name}: TAR@1e-3 {1 - tar[1e-3].value:.1%}, K={sizes_1[-1]} FNIR@FPIR0.003 "
              f"{r.fnir_at[0.003].value:.1%} ({time.perf_counter() - t_start:.0f}s)", flush=True)  # fmt: skip

    # The cascades (dlib first, then a fitted fusion): band chosen on the fit identities (those a head did not
    # train on, where the cascade has one), measured held back.
    report["cascade_band"] = {}
    for c_name, first, second, fu, fused_name, first_name in cascades:
        cal_first = cals[first_name]
        m = head_fit_m if next(s.head for s in scores if s.name == fused_name) else fit_m  # as its fused score
        band, band_rows = choose_band(first[m], second[m], labels[m], fu, cal_first, cals[fused_name])
        report["cascade_band"][c_name] = {"lo": band.lo, "hi": band.hi, "top": band.top, "candidates": band_rows}
        for k in sizes_1:
            r = cascade_identify(first[held], second[held], labels[held], fu, band, cal_first, cals[fused_name], k=k)
            report["rows"].append(result_json(c_name, r))
        print(f"  {c_name}, band {band.lo}-{band.hi} x the dlib threshold: K={sizes_1[-1]} FNIR@FPIR0.003 "
              f"{r.fnir_at[0.003].value:.1%}, second model for {_pct(r.second_model_share['strangers'])} of "
              f"strangers, {_pct(r.second_model_share['attendees'])} of attendees", flush=True)  # fmt: skip

    # Templates: 1, 2, 3 photos per attendee on the same probes (identities with at least 4 photos; the photos
    # after the third are the probes whatever the number of templates).
    template_rows = []
    names = [DLIB, fused] + [s.name for s in scores if s.name.startswith(("fusion + flip", "fusion, FaceNet"))]
    for name in names:
        e_h, cal = next(s.e for s in scores if s.name == name)[held], cals[name]
        for k in (100, 200):
            for t in (1, 2, 3):
                for mode in ("best",) if t == 1 else ("best", "mean", "both"):
                    r = identify(e_h, labels[held], cal, k=k, templates=t, mode=mode, probe_skip=3)  # type: ignore[arg-type]
                    template_rows.append(result_json(name, r))
    report["templates"] = template_rows
    # What a deployment of the fused score would ship: its calibration, fitted like any model's.
    report["calibrations"] = {name: cal.model_dump() for name, cal in cals.items() if name.startswith("fusion")}
    if cost:
        report["cost_seconds"] = measure_cost(folder)
    print(format_report(report), flush=True)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=1))
    return 0


def format_report(rep: dict[str, Any]) -> str:
    def r(x: dict[str, Any]) -> str:
        lo, hi = x["ci95"]
        return f"{x['value']:.1%} ({x['errors']:,}/{x['trials']:,}; {lo:.1%}-{hi:.1%})"

    def miss_to_hit(x: dict[str, Any]) -> str:
        return f"{1 - x['value']:.1%} ({x['trials'] - x['errors']:,}/{x['trials']:,})"

    lines = ["", "| score | K | FNIR at FPIR 0.003 | FNIR at FPIR 0.01 | calibrated: FPIR | FNIR | rank-1 |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rep["rows"]:
        a = row["fnir_at_fpir"]
        lines.append(
            f"| {row['score']} | {row['k']} | {r(a['0.003'])} | {r(a['0.01'])} | {row['fpir']['value']:.4f} "
            f"({row['fpir']['errors']}/{row['fpir']['trials']:,}) | {r(row['fnir'])} "
            f"| {miss_to_hit(row['rank1_miss'])} |"
        )
        if "second_model_share" in row:
            sh = row["second_model_share"]
            lines[-1] += f" second model: {r(sh['strangers'])} of strangers, {r(sh['attendees'])} of attendees"
    lines += ["", "| score | TAR at FMR 1e-3 | TAR at FMR 1e-4 |", "| --- | --- | --- |"]
    for name, v in rep["verify"].items():
        lines.append(f"| {name} | {miss_to_hit(v['0.001'])} | {miss_to_hit(v['0.0001'])} |")
    lines += ["", "| score | photos each | templates | K | FNIR at FPIR 0.003 | calibrated FPIR | FNIR |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rep.get("templates", []):
        lines.append(
            f"| {row['score']} | {row['templates']} | {row['mode']} | {row['k']} | {r(row['fnir_at_fpir']['0.003'])} "
            f"| {row['fpir']['value']:.4f} ({row['fpir']['errors']}/{row['fpir']['trials']:,}) | {r(row['fnir'])} |"
        )
    if "cost_seconds" in rep:
        lines += ["", "CPU seconds per face (median): " + ", ".join(
            f"{k} {v * 1000:.0f} ms" for k, v in rep["cost_seconds"].items())]  # fmt: skip
    return "\n".join(lines)
