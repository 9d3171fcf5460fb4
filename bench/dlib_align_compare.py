"""Which alignment should feed the dlib ResNet port? Verification accuracy of three chip pipelines on the dev set.

    A  MTCNN (services/embedder/detector.py) landmarks -> weighted similarity to DLIB_CHIP_TEMPLATE (dlib_align.py)
    B  MTCNN box -> dlib's 5-point shape predictor -> dlib.get_face_chip(size=150, padding=0.25)
    C  dlib's HOG detector (upsample 1) -> 5-point predictor -> dlib.get_face_chip (what dlib itself does)

plus controls: A-xfit (A with template and weights fitted on the other half of the identities: no fit-on-test),
A-unweighted (plain least squares), A-3pt (eyes and nose only) and C-cv2 (C's own transform, resampled by our
warp_chip instead of dlib's chip extractor: the resampling's share).
All chips go through DlibResNet; cosine distances of the L2-normalised descriptors over every genuine/impostor
pair give EER and TAR (= 1 - FNMR) at FMR 1e-2, 1e-3 and FMR = 0 (the strictest point the pair count allows).

    python bench/dlib_align_compare.py [--faces ../shared/faces/dev] [--fit] [--speed] [--json out.json]

--fit prints the template constants (and residuals) to paste into dlib_align.py. Needs dlib-bin and mtcnn.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.embedder.models import dlib_align  # noqa: E402
from services.embedder.models.dlib_resnet import DlibResNet, package_model_path  # noqa: E402
from services.tools.faceset import load_labelled  # noqa: E402
from services.tools.fit import empirical_threshold_at_fmr as threshold_at_fmr  # noqa: E402
from services.tools.fit import (  # noqa: E402
    equal_error_rate,
    fmr_fnmr,
    pair_distances,
)

FMR_POINTS = (1e-2, 1e-3, 0.0)


def chip_mapping(details: Any) -> np.ndarray:
    """dlib's get_mapping_to_chip(chip_details) as a 2x3 image -> chip matrix (rect corners rotated by angle)."""
    import cv2

    r = details.rect
    c = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
    s, co = np.sin(details.angle), np.cos(details.angle)

    def rot(x: float, y: float) -> np.ndarray:
        q = np.array([x, y]) - c
        return np.array([co * q[0] - s * q[1], s * q[0] + co * q[1]]) + c

    src = np.array([rot(r.left(), r.top()), rot(r.right(), r.top()), rot(r.right(), r.bottom())], np.float32)
    dst = np.array([(0, 0), (details.cols - 1, 0), (details.cols - 1, details.rows - 1)], np.float32)
    return cv2.getAffineTransform(src, dst).astype(np.float64)


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def collect(items: list[tuple[str, Path]]) -> list[dict[str, Any]]:
    """Run both detectors on every photo; keep landmarks, transforms and dlib's chips."""
    import dlib
    from PIL import Image

    from services.embedder.detector import FaceDetector

    hog = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(package_model_path("shape_predictor_5_face_landmarks.dat")))
    mtcnn = FaceDetector()
    mtcnn.load()
    rows = []
    for label, path in items:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        row: dict[str, Any] = {"label": label, "path": str(path), "rgb": rgb}
        faces = mtcnn.detect(rgb)
        if faces:
            f = max(faces, key=lambda d: d.size)
            x, y, w, h = (float(v) for v in f.box)
            row["mt_box"] = np.array([x, y, w, h])
            row["mt_lm"] = np.asarray(f.landmarks, np.float64)
            rect = dlib.rectangle(round(x), round(y), round(x + w), round(y + h))
            shape = sp(rgb, rect)
            row["chip_B"] = dlib.get_face_chip(rgb, shape, size=150, padding=dlib_align.CHIP_PADDING)
        dets = hog(rgb, 1)
        if dets:
            d = max(dets, key=lambda r: r.area())
            shape = sp(rgb, d)
            row["hog_box"] = np.array([d.left(), d.top(), d.width(), d.height()], np.float64)
            details = dlib.get_face_chip_details(shape, size=150, padding=dlib_align.CHIP_PADDING)
            row["m_C"] = chip_mapping(details)
            row["chip_C"] = dlib.get_face_chip(rgb, shape, size=150, padding=dlib_align.CHIP_PADDING)
        rows.append(row)
    return rows


def same_face(row: dict[str, Any]) -> bool:
    """Both detectors' largest faces are the same face: MTCNN's eyes land inside dlib's chip."""
    if "mt_lm" not in row or "m_C" not in row:
        return False
    p = apply(row["m_C"], row["mt_lm"])
    return bool(np.all((p > 0) & (p < 150)))


def fit_template(rows: list[dict[str, Any]]) -> tuple[np.ndarray, float, float, np.ndarray]:
    """Mean position of each MTCNN point in dlib's chip; residuals raw and after the run-time similarity fit.

    Also returns each point's RMS residual after that fit (px): the noisier points (mouth corners, which dlib's
    eye-and-nose alignment does not pin down) can be down-weighted with 1 / rms**2.
    """
    pts = np.stack([apply(r["m_C"], r["mt_lm"]) for r in rows])
    template = pts.mean(0)
    raw = float(np.linalg.norm(pts - template, axis=2).mean())
    res = np.stack(
        [
            np.linalg.norm(apply(dlib_align.similarity_transform(r["mt_lm"], template), r["mt_lm"]) - template, axis=1)
            for r in rows
        ]
    )
    return template, raw, float(res.mean()), np.sqrt((res**2).mean(0))


def metrics(emb: np.ndarray, labels: list[str]) -> dict[str, Any]:
    genuine, impostor = pair_distances(emb, labels)
    eer, eer_t = equal_error_rate(genuine, impostor)
    out: dict[str, Any] = {
        "images": len(labels),
        "genuine_pairs": len(genuine),
        "impostor_pairs": len(impostor),
        "eer": eer,
        "eer_threshold": eer_t,
    }
    # decidability d' = |mu_g - mu_i| / sqrt((var_g + var_i) / 2): a smooth summary, less noisy than the tails
    out["d_prime"] = float(abs(impostor.mean() - genuine.mean()) / np.sqrt((genuine.var() + impostor.var()) / 2))
    out["genuine_mean"] = float(genuine.mean())
    for target in FMR_POINTS:
        t = threshold_at_fmr(impostor, target)
        _, fnmr = fmr_fnmr(genuine, impostor, t)
        out[f"tar@fmr={target:g}"] = 1.0 - fnmr
        out[f"thr@fmr={target:g}"] = t
    return out


DLIB_TIMING = """
import sys, time, numpy as np, dlib
rec = dlib.face_recognition_model_v1(sys.argv[1])
chips = list(np.load(sys.argv[2]))
rec.compute_face_descriptor(chips[0])
t = time.perf_counter()
for c in chips:
    rec.compute_face_descriptor(c)
single = len(chips) / (time.perf_counter() - t)
t = time.perf_counter(); rec.compute_face_descriptor(chips); batch = len(chips) / (time.perf_counter() - t)
print(single, batch)
"""


def speed(model: DlibResNet, chips: np.ndarray) -> dict[str, float]:
    """Faces/s of the TF port at batch 1/8/32 and of dlib's compute_face_descriptor (one chip / a list of 32).

    dlib runs in a child process: TF's thread pools, still spinning in this one, would slow it down.
    """
    import subprocess
    import tempfile

    chips = np.resize(chips, (32, *chips.shape[1:]))
    out = {}
    for bs in (1, 8, 32):
        model.batch_size = bs
        model.embed_raw(chips[:bs])  # trace / warm
        best = 0.0
        for _ in range(3):
            t = time.perf_counter()
            model.embed_raw(chips)
            best = max(best, len(chips) / (time.perf_counter() - t))
        out[f"tf_batch{bs}"] = best
    model.batch_size = 32
    with tempfile.NamedTemporaryFile(suffix=".npy") as f:
        np.save(f.name, chips)
        res = subprocess.run(
            [sys.executable, "-c", DLIB_TIMING, str(package_model_path()), f.name],
            capture_output=True,
            text=True,
            check=True,
        )
    single, batch = (float(v) for v in res.stdout.split())
    out["dlib_single"], out["dlib_list32"] = single, batch
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces" / "dev")
    ap.add_argument("--fit", action="store_true", help="print the template fitted on these photos")
    ap.add_argument("--speed", action="store_true", help="also time the TF port against dlib")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    ap.add_argument("--cache", type=Path, help="pickle of the detections: written once, then reused")
    args = ap.parse_args()

    items = load_labelled(args.faces)
    t0 = time.time()
    if args.cache and args.cache.is_file():
        with args.cache.open("rb") as fh:
            rows = pickle.load(fh)  # our own file from an earlier run (bench/out is git-ignored)
    else:
        rows = collect(items)
        if args.cache:
            with args.cache.open("wb") as fh:
                pickle.dump(rows, fh)
    print(f"{len(rows)} photos, detection {time.time() - t0:.0f}s")
    matched = [r for r in rows if same_face(r)]
    for r in rows:
        if "mt_lm" in r and "m_C" in r and not same_face(r):
            print(f"largest faces differ between MTCNN and dlib (left out of the fit): {r['path']}")
    template, raw_res, fit_res, point_rms = fit_template(matched)
    print(
        f"template fitted on {len(matched)} faces: mean point distance to it {raw_res:.2f}px in dlib's chip, "
        f"{fit_res:.2f}px after the similarity fit"
    )
    print("per-point RMS residual after the similarity fit (px):", np.round(point_rms, 2).tolist())
    if args.fit:
        print("DLIB_CHIP_WEIGHTS =", np.round(point_rms.min() ** 2 / point_rms**2, 3).tolist())
        print("DLIB_CHIP_TEMPLATE = np.array([")
        for x, y in template:
            print(f"    [{x:.4f}, {y:.4f}],")
        print("])")
    shipped = dlib_align.DLIB_CHIP_TEMPLATE.astype(np.float64)
    if not np.any(shipped):
        shipped = template  # before the constants are pasted in
    print(f"shipped template max |diff| from this fit: {np.abs(shipped - template).max():.3f} px")

    # 2-fold by identity: each half aligned with the template of the other half.
    idents = sorted({r["label"] for r in rows})
    fold = {name: i % 2 for i, name in enumerate(idents)}
    fits = {k: fit_template([r for r in matched if fold[r["label"]] != k]) for k in (0, 1)}
    xfit = {k: f[0] for k, f in fits.items()}
    xfit_w = {k: f[3].min() ** 2 / f[3] ** 2 for k, f in fits.items()}
    print(f"fold templates differ by {np.abs(xfit[0] - xfit[1]).max():.3f} px max")

    model = DlibResNet.from_package()
    # A as shipped (weighted, dlib_align.align_dlib_chip); A-xfit: template and weights from the other half of
    # the identities; A-unweighted: the plain least-squares fit; A-3pt: eyes and nose only.
    shipped_w = dlib_align.DLIB_CHIP_WEIGHTS
    variants = {
        "A": (lambda r: shipped, lambda r: shipped_w),
        "A-xfit": (lambda r: xfit[1 - fold[r["label"]]], lambda r: xfit_w[1 - fold[r["label"]]]),
        "A-unweighted": (lambda r: shipped, lambda r: None),
        "A-3pt": (lambda r: shipped, lambda r: np.array([1.0, 1.0, 1.0, 0.0, 0.0])),
    }
    chips: dict[str, list[np.ndarray | None]] = {k: [] for k in (*variants, "B", "C", "C-cv2")}
    for r in rows:
        has_mt, has_c = "mt_lm" in r, "m_C" in r
        for name, (tpl, wts) in variants.items():
            chips[name].append(
                dlib_align.warp_chip(
                    r["rgb"], dlib_align.similarity_transform(r["mt_lm"], tpl(r), wts(r)), dlib_align.CHIP_SIZE
                )
                if has_mt
                else None
            )
        chips["B"].append(r.get("chip_B"))
        chips["C"].append(r.get("chip_C"))
        chips["C-cv2"].append(dlib_align.warp_chip(r["rgb"], r["m_C"], dlib_align.CHIP_SIZE) if has_c else None)
    emb = {}
    for k, cs in chips.items():
        present = [(i, c) for i, c in enumerate(cs) if c is not None]
        e = np.full((len(rows), 128), np.nan, np.float32)
        e[[i for i, _ in present]] = model.embed(np.stack([c for _, c in present]))
        emb[k] = e

    labels = [r["label"] for r in rows]
    common = [i for i, r in enumerate(rows) if "mt_lm" in r and "m_C" in r]
    result: dict[str, Any] = {
        "photos": len(rows),
        "mtcnn_found": sum("mt_lm" in r for r in rows),
        "hog_found": sum("m_C" in r for r in rows),
        "template_fit_faces": len(matched),
        "template_residual_px": raw_res,
        "template_residual_after_similarity_px": fit_res,
        "fitted_template": template.round(4).tolist(),
        "common": {},
        "own": {},
    }
    for k, e in emb.items():
        result["common"][k] = metrics(e[common], [labels[i] for i in common])
        own = [i for i in range(len(rows)) if not np.isnan(e[i, 0])]
        result["own"][k] = metrics(e[own], [labels[i] for i in own])
    # same photo, different chips: cosine distance between pipelines' descriptors (genuine pairs average ~0.05)
    for k in ("A", "A-unweighted", "B", "C-cv2"):
        cos = np.sum(emb[k][common] * emb["C"][common], axis=1)
        result[f"{k}_vs_C_same_photo_distance"] = {
            "mean": float(np.mean(1 - cos)),
            "median": float(np.median(1 - cos)),
            "max": float(np.max(1 - cos)),
        }
        print(f"{k} vs C, same photo: cosine distance mean {np.mean(1 - cos):.4f}, max {np.max(1 - cos):.4f}")
    # how far our resampling moves C's descriptors (same transform, different chip extractor)
    cd = np.abs(emb["C"][common] - emb["C-cv2"][common])
    result["c_vs_c_cv2_max_abs_diff_normalised"] = float(np.nanmax(cd))

    print(f"\nphotos {len(rows)}: MTCNN found {result['mtcnn_found']}, dlib HOG found {result['hog_found']}")
    for scope in ("common", "own"):
        print(f"\n{scope} set" + (" (photos where both detectors found a face)" if scope == "common" else ""))
        print(
            f"{'pipeline':12} {'imgs':>5} {'gen':>5} {'imp':>6} {'EER':>7} {'d_prime':>7} "
            + " ".join(f"{'TAR@' + format(t, 'g'):>10}" for t in FMR_POINTS)
        )
        for k, m in result[scope].items():
            print(
                f"{k:12} {m['images']:5d} {m['genuine_pairs']:5d} {m['impostor_pairs']:6d} {m['eer']:7.2%} "
                + f"{m['d_prime']:7.3f} "
                + " ".join(f"{m[f'tar@fmr={t:g}']:10.2%}" for t in FMR_POINTS)
            )
    if args.speed:
        ok = np.stack([c for c in chips["C"] if c is not None])
        result["speed_faces_per_s"] = speed(model, ok)
        print("\nfaces/s:", {k: round(v, 1) for k, v in result["speed_faces_per_s"].items()})
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
