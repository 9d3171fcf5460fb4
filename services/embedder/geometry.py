"""Pure image geometry for face chips: similarity fits, FaceNet's crop map, anti-aliased warps.

No model or detector imports here, so the alignment code and each model's own chip geometry can share it.
"""

from __future__ import annotations

import cv2
import numpy as np


def similarity_transform(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) src -> dst (Umeyama 1991); 2x3 matrix.

    Optional per-point weights (the dlib chip geometry trusts MTCNN's nose tip least). A deterministic closed
    form rather than cv2.estimateAffinePartial2D, whose RANSAC may drop one of five points.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    w = np.full(len(src), 1.0 / len(src)) if weights is None else np.asarray(weights, np.float64) / np.sum(weights)
    mu_s, mu_d = w @ src, w @ dst
    s, d = src - mu_s, dst - mu_d
    cov = (d * w[:, None]).T @ s
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rot = u @ sign @ vt
    var_s = float(w @ (s**2).sum(1))
    scale = float(np.trace(np.diag(sig) @ sign) / var_s) if var_s > 0 else 1.0
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def crop_transform(box: np.ndarray, size: int, margin: float) -> np.ndarray:
    """FaceNet's preprocessing as an affine map: the box grown by `margin` (total, as a fraction of each
    side; 0.25 is FaceNet's 32 px at 160) is resized to size x size, aspect not kept, as in training."""
    x, y, w, h = (float(v) for v in box)
    mw, mh = w * margin / 2, h * margin / 2
    x0, y0, x1, y1 = x - mw, y - mh, x + w + mw, y + h + mh
    sx, sy = size / (x1 - x0), size / (y1 - y0)
    return np.array([[sx, 0.0, -x0 * sx], [0.0, sy, -y0 * sy]])


def warp_chip(rgb: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """warpAffine with a pre-shrink: bilinear sampling of a large face into a small chip aliases (and
    inflates the sharpness measure), so shrink the face's region with INTER_AREA to ~2x the chip first."""
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
        pts = corners @ inv.T
        h, w = rgb.shape[:2]
        x0, y0 = np.floor(np.clip(pts.min(0), 0, [w, h])).astype(int)
        x1, y1 = np.ceil(np.clip(pts.max(0), 0, [w, h])).astype(int)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            f = scale * 2.0
            region = rgb[y0:y1, x0:x1]
            small = cv2.resize(
                region,
                (max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f))),
                interpolation=cv2.INTER_AREA,
            )
            fx, fy = small.shape[1] / (x1 - x0), small.shape[0] / (y1 - y0)
            # chip = m @ p; p = (q / f) + offset, where q is a pixel of `small`.
            pre = np.array([[1 / fx, 0, x0], [0, 1 / fy, y0], [0, 0, 1]])
            m = m @ pre
            rgb = small
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
