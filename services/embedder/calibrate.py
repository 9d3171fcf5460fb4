"""Thresholds from data: genuine/impostor distances of a labelled folder of faces -> FMR/FNMR, EER, ROC/DET.

`facegate calibrate --faces DIR` embeds `DIR/<identity>/*.jpg` through the real pipeline (the gate path: the
largest face of each photo), computes every genuine (same identity) and impostor (different identity) pair's
cosine distance, and reports the operating points an access-control product needs: the threshold at
FMR = 1e-3 and 1e-4 (1:1), and, for 1:K, the rate at which a stranger's nearest gallery face falls under the
threshold (FPIR, each identity in turn playing the stranger against all the others).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
FMR_TARGETS = (1e-2, 1e-3, 1e-4)


@dataclass
class OperatingPoint:
    fmr_target: float
    threshold: float
    fmr: float
    fnmr: float
    fpir: float


@dataclass
class Calibration:
    model_id: str
    identities: int
    images: int
    failed: list[str]
    genuine_pairs: int
    impostor_pairs: int
    eer: float
    eer_threshold: float
    operating_points: list[OperatingPoint]
    table: list[dict[str, float]] = field(default_factory=list)
    photos_per_s: float = 0.0  # the whole pipeline (decode, detect, chip, embed), one photo at a time
    faces_per_s: float = 0.0  # the embedding step alone, batches of 32 chips


def load_labelled(folder: Path) -> list[tuple[str, Path]]:
    items = []
    for ident in sorted(p for p in folder.iterdir() if p.is_dir()):
        for img in sorted(ident.iterdir()):
            if img.suffix.lower() in IMAGE_SUFFIXES:
                items.append((ident.name, img))
    return items


def pair_distances(embeddings: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distances of all unordered pairs, split into genuine and impostor."""
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    dist = 1.0 - e @ e.T
    lab = np.asarray(labels)
    iu = np.triu_indices(len(lab), k=1)
    same = lab[iu[0]] == lab[iu[1]]
    d = dist[iu]
    return d[same], d[~same]


def fmr_fnmr(genuine: np.ndarray, impostor: np.ndarray, t: float) -> tuple[float, float]:
    """A pair matches when its distance is <= t."""
    return float(np.mean(impostor <= t)), float(np.mean(genuine > t))


def threshold_at_fmr(impostor: np.ndarray, target: float) -> float:
    """The largest threshold whose FMR on these impostors is <= target.

    With n impostor pairs, at most floor(target * n) of them may fall at or under the threshold, so it sits just
    below the (k+1)-th smallest impostor distance. Where target * n < 1 this is the strictest measurable point.
    """
    s = np.sort(impostor)
    k = math.floor(target * len(s))
    if k >= len(s):
        return float(s[-1])
    return float(np.nextafter(s[k], -np.inf))


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    candidates = np.unique(np.concatenate([genuine, impostor]))
    best = (1.0, 0.0)
    gap_best = math.inf
    for t in candidates:
        fmr, fnmr = fmr_fnmr(genuine, impostor, float(t))
        gap = abs(fmr - fnmr)
        if gap < gap_best:
            gap_best, best = gap, ((fmr + fnmr) / 2, float(t))
    return best


def fpir_at(embeddings: np.ndarray, labels: list[str], t: float) -> float:
    """1:K false positive identification rate: each photo probes a gallery of all *other* identities."""
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    dist = 1.0 - e @ e.T
    lab = np.asarray(labels)
    dist[lab[:, None] == lab[None, :]] = np.inf  # the probe's own identity is not enrolled
    return float(np.mean(dist.min(axis=1) <= t))


def calibrate(model_id: str, embeddings: np.ndarray, labels: list[str], failed: list[str]) -> Calibration:
    genuine, impostor = pair_distances(embeddings, labels)
    eer, eer_t = equal_error_rate(genuine, impostor)
    points = []
    for target in FMR_TARGETS:
        t = threshold_at_fmr(impostor, target)
        fmr, fnmr = fmr_fnmr(genuine, impostor, t)
        points.append(OperatingPoint(target, round(t, 4), fmr, fnmr, fpir_at(embeddings, labels, t)))
    table = []
    # Twelve steps up to twice the EER threshold: models differ in scale (dlib's genuine pairs sit near 0.05,
    # FaceNet's near 0.3), so a fixed grid would say nothing about one of them.
    for t in np.round(np.linspace(0.0, 2.0 * eer_t, 13)[1:], 3):
        fmr, fnmr = fmr_fnmr(genuine, impostor, float(t))
        table.append({"threshold": float(t), "fmr": fmr, "fnmr": fnmr, "fpir": fpir_at(embeddings, labels, float(t))})
    return Calibration(
        model_id=model_id,
        identities=len(set(labels)),
        images=len(labels),
        failed=failed,
        genuine_pairs=len(genuine),
        impostor_pairs=len(impostor),
        eer=eer,
        eer_threshold=eer_t,
        operating_points=points,
        table=table,
    )


def format_report(cal: Calibration) -> str:
    lines = [
        f"model {cal.model_id}: {cal.images} images of {cal.identities} identities "
        f"({len(cal.failed)} without a face), {cal.genuine_pairs} genuine / {cal.impostor_pairs} impostor pairs",
        f"EER {cal.eer:.2%} at distance {cal.eer_threshold:.3f}",
        "",
        "| threshold | FMR | FNMR | FPIR (1:K, K=others) |",
        "| --- | --- | --- | --- |",
    ]
    for row in cal.table:
        lines.append(f"| {row['threshold']:.3f} | {row['fmr']:.4%} | {row['fnmr']:.2%} | {row['fpir']:.2%} |")
    lines += ["", "| operating point | threshold | FMR | FNMR | FPIR |", "| --- | --- | --- | --- | --- |"]
    for p in cal.operating_points:
        lines.append(f"| FMR <= {p.fmr_target:g} | {p.threshold:.4f} | {p.fmr:.4%} | {p.fnmr:.2%} | {p.fpir:.2%} |")
    return "\n".join(lines)


def write_plot(genuine: np.ndarray, impostor: np.ndarray, cal: Calibration, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = np.linspace(0.0, 1.5, 601)
    fmr = np.array([np.mean(impostor <= t) for t in thresholds])
    fnmr = np.array([np.mean(genuine > t) for t in thresholds])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax1.hist(genuine, bins=40, alpha=0.6, density=True, label=f"genuine ({len(genuine)})")
    ax1.hist(impostor, bins=60, alpha=0.6, density=True, label=f"impostor ({len(impostor)})")
    for p in cal.operating_points:
        ax1.axvline(p.threshold, ls="--", lw=1, color="k")
        ax1.text(p.threshold, ax1.get_ylim()[1] * 0.9, f" FMR {p.fmr_target:g}", fontsize=7, rotation=90)
    ax1.set_xlabel("cosine distance")
    ax1.set_title(f"{cal.model_id}: distance distributions")
    ax1.legend()
    floor = 1.0 / max(len(impostor), 1)
    ax2.plot(np.clip(fmr, floor, 1), np.clip(fnmr, 1.0 / max(len(genuine), 1), 1))
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("FMR (false match rate)")
    ax2.set_ylabel("FNMR (false non-match rate)")
    ax2.set_title(f"DET, EER {cal.eer:.2%}")
    ax2.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def embed_folder(pipeline: object, items: list[tuple[str, Path]]) -> tuple[np.ndarray, list[str], list[str]]:
    """Embed the largest face of each photo (the gate path); photos without a face are listed as failed."""
    from services.contracts.embedder import QualityProfile

    embs, labels, failed = [], [], []
    for label, path in items:
        res = pipeline.embed_image(path.read_bytes(), profile=QualityProfile.GATE)  # type: ignore[attr-defined]
        if not res.faces:
            failed.append(str(path))
            continue
        embs.append(np.asarray(res.faces[0].embedding, dtype=np.float32))
        labels.append(label)
    return np.stack(embs), labels, failed


def embedding_faces_per_s(model: object, seconds: float = 3.0, batch: int = 32) -> float:
    size = model.descriptor.input_size  # type: ignore[attr-defined]
    chips = np.random.default_rng(0).integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8)
    model.embed(chips)  # type: ignore[attr-defined]  # warm this batch shape
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.embed(chips)  # type: ignore[attr-defined]
        reps += 1
    return reps * batch / (time.perf_counter() - start)


def format_comparison(cals: list[Calibration]) -> str:
    def op(c: Calibration, target: float) -> OperatingPoint:
        return next(p for p in c.operating_points if p.fmr_target == target)

    lines = [
        "| model | EER | TAR @ FMR 1e-3 (threshold) | TAR @ FMR 1e-4 (threshold) | FPIR @ 1e-4 threshold "
        "| photos/s (pipeline) | faces/s (embedding, batch 32) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in cals:
        p3, p4 = op(c, 1e-3), op(c, 1e-4)
        lines.append(
            f"| {c.model_id} | {c.eer:.2%} | {1 - p3.fnmr:.2%} ({p3.threshold:.4f}) | {1 - p4.fnmr:.2%} "
            f"({p4.threshold:.4f}) | {p4.fpir:.2%} | {c.photos_per_s:.1f} | {c.faces_per_s:.1f} |"
        )
    return "\n".join(lines)


def run_calibration(*, faces: str, model_id: str | None, plot: str, json_path: str | None) -> int:
    """Calibrate one model, or several (comma-separated ids) side by side in one run."""
    from services.embedder.pipeline import FacePipeline
    from services.embedder.settings import EmbedderSettings

    items = load_labelled(Path(faces))
    if not items:
        print(f"no images under {faces}/<identity>/")
        return 2
    model_ids = [m.strip() for m in model_id.split(",")] if model_id else [EmbedderSettings().model_id]
    cals = []
    for mid in model_ids:
        pipeline = FacePipeline(EmbedderSettings(model_id=mid))
        pipeline.load()
        start = time.perf_counter()
        embs, labels, failed = embed_folder(pipeline, items)
        elapsed = time.perf_counter() - start
        cal = calibrate(mid, embs, labels, failed)
        cal.photos_per_s = round(len(items) / elapsed, 2)
        cal.faces_per_s = round(embedding_faces_per_s(pipeline.model), 1)
        print(format_report(cal))
        print(f"\nembedded {len(items)} photos in {elapsed:.1f} s\n")
        path = Path(plot) if len(model_ids) == 1 else Path(plot).with_name(f"{Path(plot).stem}-{mid}.png")
        genuine, impostor = pair_distances(embs, labels)
        write_plot(genuine, impostor, cal, path)
        print(f"plot: {path}\n")
        cals.append(cal)
    if len(cals) > 1:
        print(format_comparison(cals))
    if json_path:
        Path(json_path).write_text(json.dumps([asdict(c) for c in cals], indent=2))
    return 0
