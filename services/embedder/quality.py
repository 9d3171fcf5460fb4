"""Per-face quality measures and the enrol/gate rules that turn them into stable reason codes."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from services.contracts.embedder import FaceQuality, QualityReason
from services.embedder.detector import Detection
from services.embedder.settings import QualityThresholds


def pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(inter_eye_px, yaw, pitch) from the five points.

    yaw: the nose's offset from the eye midpoint along the eye axis, in eye distances (0 frontal, about
    +-0.5 near profile). pitch: the nose's depth below the eye line over the mouth's (about 0.5 frontal).
    """
    le, re, nose, ml, mr = (landmarks[i].astype(np.float64) for i in range(5))
    axis = re - le
    dist = float(np.hypot(*axis))
    if dist < 1e-6:
        return 0.0, 0.0, 0.0
    u = axis / dist
    normal = np.array([-u[1], u[0]])
    mid = (le + re) / 2
    yaw = float(np.dot(nose - mid, u) / dist)
    nose_down = float(np.dot(nose - mid, normal))
    mouth_down = float(np.dot((ml + mr) / 2 - mid, normal))
    pitch = nose_down / mouth_down if abs(mouth_down) > 1e-6 else 0.0
    return dist, yaw, pitch


def chip_measures(chip: np.ndarray) -> tuple[float, float]:
    """(sharpness, brightness) of an aligned uint8 RGB chip: variance of the Laplacian and mean luma."""
    grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    return sharpness, float(grey.mean())


def assess_face(det: Detection, chip: np.ndarray, rules: QualityThresholds) -> FaceQuality:
    inter_eye, yaw, pitch = pose(det.landmarks)
    sharpness, brightness = chip_measures(chip)
    reasons: list[QualityReason] = []
    if inter_eye < rules.min_inter_eye_px or float(min(det.box[2], det.box[3])) < rules.min_box_px:
        reasons.append(QualityReason.FACE_TOO_SMALL)
    if det.score < rules.min_score:
        reasons.append(QualityReason.LOW_CONFIDENCE)
    if sharpness < rules.min_sharpness:
        reasons.append(QualityReason.BLURRED)
    lo, hi = rules.pitch_range
    if abs(yaw) > rules.max_abs_yaw or not lo <= pitch <= hi:
        reasons.append(QualityReason.EXTREME_POSE)
    if brightness < rules.min_brightness:
        reasons.append(QualityReason.TOO_DARK)
    if brightness > rules.max_brightness:
        reasons.append(QualityReason.TOO_BRIGHT)
    return FaceQuality(
        passed=not reasons,
        reasons=reasons,
        sharpness=round(sharpness, 3),
        brightness=round(brightness, 3),
        inter_eye_px=round(inter_eye, 3),
        yaw=round(yaw, 4),
        pitch=round(pitch, 4),
    )


def image_reasons(dets: Sequence[Detection], rules: QualityThresholds) -> list[QualityReason]:
    """Image-level codes. `dets` is sorted largest first and holds every detected face (before max_faces)."""
    if not dets:
        return [QualityReason.NO_FACE]
    # A second face comparable in size makes "who is this?" ambiguous; small background faces do not.
    if len(dets) > 1 and dets[1].size >= rules.multiple_faces_ratio * dets[0].size:
        return [QualityReason.MULTIPLE_FACES]
    return []
