"""The plane tests and the yaw measure on landmarks with known geometry: a real face's 68 points (dlib's predictor
on a dev photo) put in 3D, flat or with the nose standing out, turned and projected through a pinhole camera."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from services.embedder.landmarks import NOSE_TIP, ShapePredictor, box_from_mtcnn
from services.embedder.liveness_geometry import NOSE, face_scale, plane_fit, texture_parallax, yaw_degrees
from services.embedder.pipeline import FacePipeline


@pytest.fixture(scope="module")
def face_points(faces_dir: Path, pipeline: FacePipeline) -> np.ndarray:
    rgb = np.asarray(Image.open(faces_dir / "dev/Vladimir_Putin/2.jpg").convert("RGB"))
    det = pipeline.detector.detect(rgb)[0]
    predictor = ShapePredictor()
    return predictor.predict(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), box_from_mtcnn(det.box, det.landmarks))


def _project(points3d: np.ndarray, yaw_deg: float) -> np.ndarray:
    rot, _ = cv2.Rodrigues(np.array([0.0, np.radians(yaw_deg), 0.0]))
    cam = points3d @ rot.T + np.array([0.0, 0.0, 600.0])
    return np.asarray(600.0 * cam[:, :2] / cam[:, 2:3] + 320.0)


def _lift(points: np.ndarray, nose_depth: float) -> np.ndarray:
    """Centre the 2D points and give them depth: 0 for a flat picture, the nose `nose_depth` face scales forward."""
    centred = points - points.mean(0)
    z = np.zeros(len(points))
    z[NOSE] = -nose_depth * face_scale(points)
    return np.column_stack([centred, z])


def test_a_flat_face_turned_has_no_parallax_and_a_head_has(face_points: np.ndarray) -> None:
    flat = _lift(face_points, 0.0)
    head = _lift(face_points, 0.3)
    # A turn to the subject's left is a negative rotation about the camera's y axis here (the nose, in front,
    # goes towards the image's right edge).
    flat_fit = plane_fit(_project(flat, 0.0), _project(flat, -25.0))
    head_fit = plane_fit(_project(head, 0.0), _project(head, -25.0))
    assert flat_fit.deformation > 0.01 and flat_fit.parallax < 1e-6 and flat_fit.planarity > 0.999
    assert head_fit.parallax > 0.06 and head_fit.planarity < 0.4
    # Yaw: the head's nose moves towards the image's right edge as it turns to the subject's left (positive);
    # the flat picture's nose stays between the eyes but for perspective (the nearer eye grows: ~6 degrees here,
    # half of min_turn_deg).
    assert yaw_degrees(_project(head, -25.0)) - yaw_degrees(_project(head, 0.0)) > 15.0
    assert abs(yaw_degrees(_project(flat, -25.0)) - yaw_degrees(_project(flat, 0.0))) < 8.0
    assert yaw_degrees(_project(head, 25.0)) < yaw_degrees(_project(head, 0.0)) - 15.0
    assert NOSE_TIP in NOSE


def test_texture_on_a_plane_fits_one_homography_and_on_a_relief_does_not() -> None:
    """Millimetres at 600 mm from a 600 px camera (1 mm ~ 1 px); a face's eye-to-mouth distance is ~70 mm."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(-60, 60, (100, 2))
    head = -np.sqrt(np.clip(95.0**2 - (xy**2).sum(1), 0.0, None))  # a head as a 95 mm ball: cheeks recede
    flat3d = np.column_stack([xy, np.zeros(100)])
    head3d = np.column_stack([xy, head - head.min()])
    flat = texture_parallax(_project(flat3d, 0.0), _project(flat3d, 20.0), 70.0)
    relief = texture_parallax(_project(head3d, 0.0), _project(head3d, 20.0), 70.0)
    assert flat is not None and flat < 1e-4
    # A smooth ball is a weak relief (real heads in bench/liveness.py: 0.11-0.16 with the ears and jaw line),
    # yet hundreds of times a flat picture's.
    assert relief is not None and relief > 0.02
    lost = np.full((100, 2), np.nan)
    assert texture_parallax(_project(flat3d, 0.0), lost, 70.0) is None  # nothing followed: no evidence


def test_a_head_whose_corners_mostly_lie_on_one_plane_is_still_a_head() -> None:
    """Glasses, a fringe or a flat forehead can give most of a face's corners one near-plane; the quarter on the
    nose and cheeks still stand off it. The median of a least-squares fit (the first texture test) called such a
    head nearly flat; the robust fit's 75th percentile does not, and a picture with flow glitches stays flat."""
    rng = np.random.default_rng(1)
    xy = rng.uniform(-60, 60, (100, 2))
    depth = np.zeros(100)
    depth[:30] = rng.uniform(15.0, 35.0, 30)  # 30 of 100 corners on the nose and cheeks, the rest on glasses
    head3d = np.column_stack([xy, depth])
    before, after = _project(head3d, 0.0), _project(head3d, 25.0)
    relief = texture_parallax(before, after, 70.0)
    assert relief is not None and relief > 0.05  # min_texture_parallax: a head
    s, d = before.astype(np.float64), after.astype(np.float64)
    h, _ = cv2.findHomography(s, d, 0)
    old = float(np.median(np.hypot(*(cv2.perspectiveTransform(s[None], h)[0] - d).T))) / 70.0
    assert old < 0.05  # what the least-squares median made of it: a picture
    flat3d = np.column_stack([xy, np.zeros(100)])
    glitched = _project(flat3d, 25.0)
    glitched[:8] += rng.uniform(-20, 20, (8, 2))  # a few corners the flow lost track of
    flat = texture_parallax(_project(flat3d, 0.0), glitched, 70.0)
    assert flat is not None and flat < 0.01
