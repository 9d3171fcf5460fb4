"""Compare chip modes on labelled photos: which gives better verification with this model?

    .venv/bin/python -m services.tools.evaluate_align [--faces ../shared/faces/dev]

Detects each photo once (largest face), then embeds it three ways: FaceNet's box+margin crop, a 5-point
similarity alignment to the model's template, and the same alignment to the ArcFace template scaled to the
chip. Reports genuine/impostor cosine-distance separation (d'), EER, TAR at FMR 1e-2 / 1e-3 (the strictest
the pair count supports) and leave-one-out rank-1.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from services.embedder.detector import Detection
from services.embedder.geometry import crop_transform, similarity_transform, warp_chip
from services.embedder.pipeline import FacePipeline
from services.embedder.settings import EmbedderSettings

ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


def verification(emb: np.ndarray, labels: list[str]) -> dict[str, float]:
    d = 1.0 - emb @ emb.T
    iu = np.triu_indices(len(emb), 1)
    same = np.array([labels[i] == labels[j] for i, j in zip(*iu, strict=True)])
    gen, imp = d[iu][same], d[iu][~same]
    out = {
        "genuine_pairs": float(len(gen)),
        "impostor_pairs": float(len(imp)),
        "genuine_mean": float(gen.mean()),
        "impostor_mean": float(imp.mean()),
        "dprime": float((imp.mean() - gen.mean()) / np.sqrt((gen.var() + imp.var()) / 2)),
    }
    imp_sorted = np.sort(imp)
    for fmr in (1e-2, 1e-3):
        k = int(fmr * len(imp))
        thr = imp_sorted[k] if k > 0 else imp_sorted[0]
        out[f"tar_at_fmr_{fmr:g}"] = float((gen < thr).mean())
    ts = np.linspace(0, 2, 2001)
    fm = np.array([(imp <= t).mean() for t in ts])
    fn = np.array([(gen > t).mean() for t in ts])
    i = int(np.argmin(np.abs(fm - fn)))
    out["eer"] = float((fm[i] + fn[i]) / 2)
    dd = d.copy()
    np.fill_diagonal(dd, np.inf)
    out["rank1"] = float(np.mean([labels[i] == labels[j] for i, j in enumerate(dd.argmin(1))]))
    return out


def main() -> int:
    default = os.environ.get("FACEGATE_FACES_DIR", str(Path(__file__).resolve().parents[3] / "shared/faces"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", default=default + "/dev")
    args = ap.parse_args()
    pipe = FacePipeline(EmbedderSettings())
    pipe.load()
    geo = pipe.model.geometry
    items: list[tuple[str, np.ndarray, Detection]] = []
    for path in sorted(Path(args.faces).glob("*/*.jpg")):
        image = pipe.decode(path.read_bytes())
        dets = pipe.detector.detect(image.rgb)
        if dets:
            items.append((path.parent.name, image.rgb, dets[0]))
    labels = [label for label, _, _ in items]
    arcface = (ARCFACE_112 * geo.size / 112).astype(np.float32)
    modes: dict[str, Callable[[Detection], np.ndarray]] = {
        "crop (box + 25% margin)": lambda d: crop_transform(d.box, geo.size, geo.crop_margin),
        "landmarks (model template)": lambda d: similarity_transform(d.landmarks, geo.template),
        "landmarks (ArcFace template)": lambda d: similarity_transform(d.landmarks, arcface),
    }
    print(f"{len(items)} photos, {len(set(labels))} identities")
    print("| mode | d' | EER | TAR@FMR=1e-2 | TAR@FMR=1e-3 | rank-1 | genuine mean | impostor mean |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, transform in modes.items():
        chips = np.stack([warp_chip(rgb, transform(det), geo.size) for _, rgb, det in items])
        r = verification(pipe.model.embed(chips), labels)
        print(
            f"| {name} | {r['dprime']:.2f} | {r['eer']:.2%} | {r['tar_at_fmr_0.01']:.1%} | {r['tar_at_fmr_0.001']:.1%}"
            f" | {r['rank1']:.1%} | {r['genuine_mean']:.3f} | {r['impostor_mean']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
