"""`facegate calibrate`: fit each model's calibration on part of a labelled face set, measure it on the rest.

    facegate calibrate --faces ../shared/faces/calib --model dlib-resnet-128,facenet-casia-512 [--write]

Every photo is embedded once through the real pipeline (the gate path: the dominant face), cached under
`data/calib-cache/`. Identities are split by a hash of their name (`fit.is_held_back`): the fit reads only the
fit part; the report measures the fitted calibration on the held-back part, as an organiser's event would see
it: verify FMR/FNMR at the target FMR, identify FPIR/FNIR/wrong-person admits for events of K attendees, the
predicted thresholds and rates for K = 10,000 and 100,000, what each enrolment quality rule refuses, and what
the multiple-faces rule costs. `--write` stores the calibration in `services/contracts/calibrations/`, where
the gateway reads it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.contracts.calibration import DEFAULT_TARGET_FMR, DEFAULT_TARGET_FPIR, Calibration
from services.tools import fit
from services.tools.faceset import FaceSet, embed_faceset

CALIBRATIONS_DIR = Path(__file__).resolve().parents[1] / "contracts" / "calibrations"
PREDICTED_SIZES = (1_000, 10_000, 100_000)


@dataclass
class Report:
    model_id: str
    photos: int
    no_face: int
    fit_identities: int
    held_back_identities: int
    held_back_photos: int
    margin_choice: list[dict[str, Any]]
    verify: dict[str, Any]
    identify: list[dict[str, Any]]
    predicted: list[dict[str, Any]]
    quality: dict[str, Any]
    multiple_faces: list[dict[str, Any]]
    calibration: dict[str, Any] = field(default_factory=dict)


def identify_sizes(held: FaceSet, templates_per_attendee: int) -> list[int]:
    """Event sizes the held-back part allows: at least 100 identities stay out of the gallery as strangers."""
    _, counts = np.unique(held.labels, return_counts=True)
    eligible = int((counts > templates_per_attendee).sum())
    limit = min(eligible, len(counts) - 100)
    return [k for k in (100, 200, 300, 400) if k <= limit]


def _rate(r: fit.Rate) -> dict[str, Any]:
    lo, hi = r.interval()
    return {"value": r.value, "errors": r.errors, "trials": r.trials, "ci95": [lo, hi]}


def quality_report(fs: FaceSet, cal: Calibration, held: np.ndarray) -> dict[str, Any]:
    """What each enrolment rule refuses on the whole set, and whether refusing pays: the held-back genuine pairs
    that involve a refused photo fail 1:1 at the verify threshold how much more often than the others?"""
    from services.embedder.settings import EmbedderSettings

    ratio = EmbedderSettings().enrol.multiple_faces_ratio
    reasons = [
        rs + (["multiple_faces"] if r >= ratio else []) for rs, r in zip(fs.enrol_reasons, fs.second_ratio, strict=True)
    ]
    fs = FaceSet(**{**fs.__dict__, "enrol_reasons": reasons})
    refused = Counter(r for rs in fs.enrol_reasons for r in rs)
    any_rule = np.asarray([bool(rs) for rs in fs.enrol_reasons]) | ~fs.has_face
    t = cal.verify_threshold(DEFAULT_TARGET_FMR)
    part = fs.subset(held & fs.has_face)
    flags = {rule: np.asarray([rule in rs for rs in part.enrol_reasons]) for rule in refused}
    e = part.embeddings
    d = 1.0 - e @ e.T
    iu = np.triu_indices(len(part.labels), k=1)
    same = part.labels[iu[0]] == part.labels[iu[1]]
    gd = d[iu][same]
    rules = {}
    for rule, f in flags.items():
        involved = (f[iu[0]] | f[iu[1]])[same]
        rules[rule] = {
            "refused_photos": refused[rule],
            "fnmr_with_refused": float(np.mean(gd[involved] > t)) if involved.any() else None,
            "pairs_with_refused": int(involved.sum()),
            "fnmr_others": float(np.mean(gd[~involved] > t)),
        }
    return {"failure_to_enrol": float(any_rule.mean()), "refused_any": int(any_rule.sum()), "rules": rules}


def multiple_faces_report(fs: FaceSet) -> list[dict[str, Any]]:
    """Share of these single-subject photos a 'second comparable face' rule would refuse, per size ratio."""
    return [
        {"ratio": r, "refused": float(np.mean(fs.second_ratio >= r)), "count": int((fs.second_ratio >= r).sum())}
        for r in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    ]


def calibrate_model(fs: FaceSet, *, data: str) -> tuple[Calibration, Report]:
    ok = fs.has_face
    held = fit.held_back_mask(fs.labels)
    fit_part, held_part = fs.subset(ok & ~held), fs.subset(ok & held)
    n_held = len(np.unique(held_part.labels))
    cal = fit.fit_calibration(fs.model_id, fit_part.embeddings, fit_part.labels, held_back_identities=n_held, data=data)
    sizes = tuple(k for k in (100, 200) if k < len(np.unique(fit_part.labels)) - 100)
    cal, margin_rows = fit.choose_margin(
        fit_part.embeddings, fit_part.labels, cal, target_fpir=DEFAULT_TARGET_FPIR, sizes=sizes
    )

    tv = cal.verify_threshold(DEFAULT_TARGET_FMR)
    fmr, fnmr = fit.verify_rates(held_part.embeddings, held_part.labels, tv)
    verify = {"target_fmr": DEFAULT_TARGET_FMR, "threshold": tv, "fmr": _rate(fmr), "fnmr": _rate(fnmr)}
    identify = []
    for tpa in (1, 2):
        for k in identify_sizes(held_part, tpa):
            run = fit.simulate_identify(
                held_part.embeddings, held_part.labels, cal,
                k=k, templates_per_attendee=tpa, target_fpir=DEFAULT_TARGET_FPIR, repeats=20,
            )  # fmt: skip
            identify.append({
                "k": k, "templates_per_attendee": tpa, "threshold": run.threshold, "target_fpir": DEFAULT_TARGET_FPIR,
                "fpir": _rate(run.fpir), "fnir": _rate(run.fnir), "wrong_person": _rate(run.wrong_person),
            })  # fmt: skip
    predicted = []
    for k in PREDICTED_SIZES:
        t = cal.identify_threshold(DEFAULT_TARGET_FPIR, k)
        lo, hi = cal.fpir_interval(t, k)
        share = cal.margin_factor(k)
        predicted.append({
            "k": k, "threshold": t, "fpir": cal.fpir(t, k) * share,
            "fpir_90": [lo * share, hi * share], "fnir": cal.fnmr(t),
            "fnir_two_photos": cal.fnmr(cal.identify_threshold(DEFAULT_TARGET_FPIR, 2 * k, k), 2),
        })  # fmt: skip
    report = Report(
        model_id=fs.model_id,
        photos=len(fs.paths),
        no_face=int((~ok).sum()),
        fit_identities=cal.fit_identities,
        held_back_identities=n_held,
        held_back_photos=len(held_part.labels),
        margin_choice=margin_rows,
        verify=verify,
        identify=identify,
        predicted=predicted,
        quality=quality_report(fs, cal, held),
        multiple_faces=multiple_faces_report(fs),
    )
    return cal, report


def _pct(x: Any) -> str:
    return "-" if x is None else f"{float(x):.2%}"


def _r(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    return f"{r['value']:.4f} ({r['errors']}/{r['trials']}; {lo:.4f}-{hi:.4f})"


def format_report(rep: Report, cal: Calibration) -> str:
    v = rep.verify
    lines = [
        f"## {rep.model_id}",
        f"{rep.photos} photos ({rep.no_face} without a face); fitted on {rep.fit_identities} identities "
        f"({cal.fit_photos} photos, {cal.impostor_pairs:,} impostor pairs), measured on {rep.held_back_identities} "
        f"held-back identities ({rep.held_back_photos} photos)",
        f"impostor tail: GPD below d={cal.tail.u:.4f} (FMR {cal.tail.p_u:.1e}), xi {cal.tail.xi:.3f}, "
        f"sigma {cal.tail.sigma:.4f}; margin {cal.margin:.4f} keeps "
        + ", ".join(f"{f:.0%} at {k}" for k, f in cal.margin_fpir_factor)
        + " attendees of a stranger's would-be admits",
        "",
        f"verify at target FMR {v['target_fmr']:g}: threshold {float(v['threshold']):.4f}, held-back "
        f"FMR {_r(v['fmr'])}, FNMR {_r(v['fnmr'])}",
        "",
        "| K | photos each | threshold | FPIR (target 0.003) | FNIR | wrong-person admits |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rep.identify:
        lines.append(
            f"| {row['k']} | {row['templates_per_attendee']} | {float(row['threshold']):.4f} | {_r(row['fpir'])} "
            f"| {_r(row['fnir'])} | {_r(row['wrong_person'])} |"
        )
    lines += ["", "| K (predicted) | threshold | FPIR (90% interval) | FNIR, one photo | FNIR, two photos |"]
    lines += ["| --- | --- | --- | --- | --- |"]
    for p in rep.predicted:
        lo, hi = p["fpir_90"]
        lines.append(
            f"| {p['k']:,} | {float(p['threshold']):.4f} | {float(p['fpir']):.4f} ({lo:.4f}-{hi:.4f}) "
            f"| {_pct(p['fnir'])} | {_pct(p['fnir_two_photos'])} |"
        )
    q = rep.quality
    lines += [
        "",
        f"enrolment quality rules: failure to enrol {_pct(q['failure_to_enrol'])} ({q['refused_any']} photos)",
    ]
    lines += [
        "| rule | refused | 1:1 FNMR, pairs with a refused photo | FNMR, other pairs |",
        "| --- | --- | --- | --- |",
    ]
    for rule, s in q["rules"].items():
        lines.append(
            f"| {rule} | {s['refused_photos']} | {_pct(s['fnmr_with_refused'])} ({s['pairs_with_refused']} pairs) "
            f"| {_pct(s['fnmr_others'])} |"
        )
    lines += ["", "second face at least this size of the largest: share of (single-subject) photos refused"]
    lines += ["  " + ", ".join(f"{m['ratio']:.1f}: {m['refused']:.1%}" for m in rep.multiple_faces)]
    return "\n".join(lines)


def write_plot(fs: FaceSet, cal: Calibration, path: Path) -> None:
    """DET on the held-back part (measured) with the calibration's FMR curve (fitted), and the distributions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held = fs.subset(fit.held_back_mask(fs.labels) & fs.has_face)
    genuine, impostor = fit.pair_distances(held.embeddings, held.labels)
    ts = np.linspace(0.0, float(np.quantile(impostor, 0.5)), 400)
    imp_sorted, gen_sorted = np.sort(impostor), np.sort(genuine)
    fmr = np.searchsorted(imp_sorted, ts, side="right") / len(imp_sorted)
    fnmr = 1.0 - np.searchsorted(gen_sorted, ts, side="right") / len(gen_sorted)
    model_fmr = np.asarray([cal.fmr(float(t)) for t in ts])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax1.hist(genuine, bins=60, alpha=0.6, density=True, label=f"genuine ({len(genuine):,})")
    ax1.hist(impostor, bins=120, alpha=0.6, density=True, label=f"impostor ({len(impostor):,})")
    ax1.axvline(cal.verify_threshold(DEFAULT_TARGET_FMR), ls="--", color="k", lw=1)
    ax1.set_xlabel("cosine distance")
    ax1.set_title(f"{cal.model_id}: held-back distances")
    ax1.legend()
    floor = 1.0 / len(impostor)
    ax2.plot(np.clip(fmr, floor, 1), np.clip(fnmr, 1e-4, 1), label="measured (held back)")
    ax2.plot(np.clip(model_fmr, 1e-9, 1), np.clip(fnmr, 1e-4, 1), ls="--", label="calibration's FMR (fit part)")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("FMR")
    ax2.set_ylabel("FNMR")
    ax2.set_title("DET")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_calibration(
    *, faces: str, model_id: str | None, plot_dir: str, json_path: str | None, write: bool, cache_dir: str
) -> int:
    from services.embedder.settings import EmbedderSettings

    folder = Path(faces)
    model_ids = [m.strip() for m in model_id.split(",")] if model_id else [EmbedderSettings().model_id]
    reports = []
    for mid in model_ids:
        fs = embed_faceset(folder, mid, Path(cache_dir))
        cal, rep = calibrate_model(fs, data=f"{folder.name}/ ({len(fs.paths)} photos), fit on identities not held back")
        print(format_report(rep, cal), "\n", flush=True)
        Path(plot_dir).mkdir(parents=True, exist_ok=True)
        plot = Path(plot_dir) / f"det-{mid}.png"
        write_plot(fs, cal, plot)
        print(f"plot: {plot}\n")
        if write:
            CALIBRATIONS_DIR.mkdir(parents=True, exist_ok=True)
            out = CALIBRATIONS_DIR / f"{mid}.json"
            out.write_text(cal.model_dump_json(indent=1) + "\n")
            print(f"wrote {out}\n")
        rep.calibration = cal.model_dump()
        reports.append(asdict(rep))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(reports, indent=1))
    return 0
