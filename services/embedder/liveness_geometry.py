"""The geometry of a head turn from dense landmarks: yaw per frame, and whether one homography explains the
motion (a flat picture) or the face shows parallax (a head).

Pure NumPy/OpenCV on 68 x 2 point arrays, so the measures can be tested and benchmarked without a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from services.embedder.geometry import similarity_transform
from services.embedder.landmarks import EYE_OUTER, NOSE_TIP

# A generic head (the common 6-point model used with solvePnP: nose tip at the origin, outer eye corners at
# x = +-225, 135 units behind it): a yaw of t degrees moves the nose off the eye corners' midpoint by
# 135 sin t while the corners' half-distance becomes 225 cos t, so offset / half-distance = 0.6 tan t.
NOSE_DEPTH_OVER_HALF_EYES = 135 / 225

# Points of the parallax test: brows, nose, eyes, mouth and the jaw. All 68: the jaw contour of a turned head
# slides over the skin (it is a silhouette, not a fixed point), which no plane can mimic.
PLANE_POINTS = slice(0, 68)


def yaw_degrees(points: np.ndarray) -> float:
    """The head's yaw, in degrees, from the nose tip's offset along the eye axis; positive when the nose moves
    towards the image's right edge (the subject turns to their own left in an unmirrored frame)."""
    a, b = points[EYE_OUTER[0]], points[EYE_OUTER[1]]
    axis = b - a
    dist = float(np.hypot(*axis))
    if dist < 1e-6:
        return 0.0
    offset = float(np.dot(points[NOSE_TIP] - (a + b) / 2, axis / dist)) / (dist / 2)
    return float(np.degrees(np.arctan(offset / NOSE_DEPTH_OVER_HALF_EYES)))


def face_scale(points: np.ndarray) -> float:
    """Distance from the eyes' centre to the mouth's: a face size that barely changes as the head turns."""
    return float(np.hypot(*(points[48:68].mean(0) - points[36:48].mean(0))))


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum((a - b) ** 2, axis=1))))


@dataclass(frozen=True)
class PlaneFit:
    deformation: float  # RMS residual after the best similarity, in face scales: how much the shape changed
    residual: float  # RMS residual after the best homography, in face scales: what no plane explains
    planarity: float  # 1 - residual / deformation, clipped to [0, 1]: the part of the change a plane explains


def plane_fit(src: np.ndarray, dst: np.ndarray) -> PlaneFit:
    """How well a plane explains the landmarks' motion from `src` to `dst` (both 68 x 2).

    A flat picture moved in 3D changes its image by a homography: whatever the similarity (shift, roll, zoom)
    leaves over, the homography takes up. A turning head's nose, eyes and jaw lie at different depths, so part of
    the change is parallax that no homography removes.
    """
    s = np.asarray(src, np.float64)[PLANE_POINTS]
    d = np.asarray(dst, np.float64)[PLANE_POINTS]
    scale = max(face_scale(np.asarray(src, np.float64)), 1e-6)
    m = similarity_transform(s, d)
    sim = s @ m[:, :2].T + m[:, 2]
    deformation = _rms(sim, d) / scale
    h, _ = cv2.findHomography(s, d, 0)  # least squares on every point: no point is an outlier to a plane
    if h is None:
        return PlaneFit(deformation, deformation, 0.0)
    proj = cv2.perspectiveTransform(s[None], h)[0]
    residual = _rms(proj, d) / scale
    planarity = 1.0 - residual / deformation if deformation > 1e-9 else 1.0
    return PlaneFit(deformation, residual, float(np.clip(planarity, 0.0, 1.0)))
