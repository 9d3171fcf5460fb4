"""Face chips: 5-point similarity alignment to the model's template, or FaceNet's box-plus-margin crop."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from services.embedder.detector import Detection
from services.embedder.models.base import ChipGeometry

AlignMode = Literal["landmarks", "crop"]


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) mapping src points onto dst; 2x3 matrix."""
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var_s = (s_c**2).sum() / len(src)
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def crop_transform(box: np.ndarray, size: int, margin: float) -> np.ndarray:
    """FaceNet's preprocessing as an affine map: the box grown by `margin` (total, as a fraction of each
    side; 0.25 is FaceNet's 32 px at 160) is resized to size x size, aspect not kept, as in training."""
    x, y, w, h = (float(v) for v in box)
    mw, mh = w * margin / 2, h * margin / 2
    x0, y0, x1, y1 = x - mw, y - mh, x + w + mw, y + h + mh
    sx, sy = size / (x1 - x0), size / (y1 - y0)
    return np.array([[sx, 0.0, -x0 * sx], [0.0, sy, -y0 * sy]])


def _warp(rgb: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
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


def chip_transform(det: Detection, geometry: ChipGeometry, mode: AlignMode) -> np.ndarray:
    if mode == "landmarks":
        return similarity_transform(det.landmarks, geometry.template)
    return crop_transform(det.box, geometry.size, geometry.crop_margin)


def extract_chip(rgb: np.ndarray, det: Detection, geometry: ChipGeometry, mode: AlignMode) -> np.ndarray:
    """One size x size uint8 RGB chip for `det`."""
    return _warp(rgb, chip_transform(det, geometry, mode), geometry.size)


def extract_chips(rgb: np.ndarray, dets: list[Detection], geometry: ChipGeometry, mode: AlignMode) -> np.ndarray:
    size = geometry.size
    if not dets:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.stack([extract_chip(rgb, d, geometry, mode) for d in dets])
