"""dlib's face-chip geometry for MTCNN's five landmarks: 150x150 chips for `DlibResNet` without dlib.

dlib's ResNet was trained on chips from `get_face_chip(img, shape, size=150, padding=0.25)`, where `shape` comes
from its own 5-point predictor (both corners of each eye and the base of the nose). MTCNN gives different points
(eye centres, nose tip, mouth corners), so we place MTCNN's points where they land, on average, inside dlib's
chips, and align a face by the weighted least-squares similarity transform from its MTCNN points to those
positions (weights: how tightly each MTCNN point follows dlib's frame).

DLIB_CHIP_TEMPLATE was fitted once, offline, by `bench/dlib_align_compare.py --fit` (numbers pasted below, not
fitted at run time): on the dev photos (../shared/faces/dev) every face found by both dlib's HOG detector +
5-point predictor and MTCNN (services/embedder/detector.py), MTCNN's landmarks were mapped into dlib's chip
through the exact image->chip transform of `get_face_chip_details(shape, 150, 0.25)` (dlib's
`get_mapping_to_chip`), and each point's position averaged over the faces (the least-squares canonical
position in dlib's chip frame); the weights are 1 / each point's mean squared residual after the similarity fit.
See the bench script's output for the residuals and the verification accuracy.
"""

from __future__ import annotations

import numpy as np

from services.embedder.geometry import similarity_transform, warp_chip

CHIP_SIZE = 150
CHIP_PADDING = 0.25  # dlib's get_face_chip padding the ResNet was trained with

# MTCNN order: left_eye, right_eye, nose, mouth_left, mouth_right (image left/right), in 150px chip pixels.
# Fitted on 149 dev faces (150 photos; in one the two detectors' largest faces differed); a face's MTCNN points
# lie on average 4.7 px from these in dlib's chip, 3.6 px after the similarity fit. Fits on two disjoint halves
# of the identities differ by up to 2.7 px.
DLIB_CHIP_TEMPLATE = np.array(
    [
        [46.6366, 44.2235],
        [100.2289, 43.9129],
        [72.3956, 76.7849],
        [49.4835, 102.8356],
        [98.1529, 102.4924],
    ],
    dtype=np.float32,
)
# Per-point weights of the similarity fit, 1 / RMS residual**2 (normalised to the best point) from the same fit:
# RMS 3.2, 2.6, 6.9, 4.4, 4.2 px. The nose tip moves most against dlib's nose-base frame (likely head pitch), the mouth
# corners with expression. On the dev set the weighted fit beats the plain one (EER 1.2% vs 1.8%, d' 4.54 vs
# 4.45; 1.2% / 4.55 with template and weights fitted on the other half of the identities) and matches dlib's own
# detector + predictor (1.4% / 4.50). Small set: 342 genuine pairs, one pair is 0.3%.
DLIB_CHIP_WEIGHTS = np.array([0.655, 1.0, 0.137, 0.338, 0.379], dtype=np.float64)


def align_dlib_chip(rgb: np.ndarray, mtcnn_landmarks: np.ndarray) -> np.ndarray:
    """uint8 RGB image + MTCNN's 5 landmarks [5, 2] (image pixels, MTCNN order) -> 150x150x3 uint8 dlib chip."""
    pts = np.asarray(mtcnn_landmarks, np.float64).reshape(5, 2)
    m = similarity_transform(pts, DLIB_CHIP_TEMPLATE, DLIB_CHIP_WEIGHTS)
    return warp_chip(rgb, m, CHIP_SIZE)
