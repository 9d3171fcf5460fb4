"""Bursts of camera frames for the head-turn challenge, made from real video (tests, browser tests, `bench/gates.py`).

`live/interview_head_turns.avi` (../shared/faces/SOURCES.md: 139 frames at 25 fps, 320x240) has one clear, quick
turn: from frame 116 the person turns to their own right (their nose moves towards the image's left edge). It is
used up to frame 121 (about 24 degrees by the embedder's yaw, twice its minimum): further on, the face is so far in
profile that the embedder's same-face check (frontal against last frame, at the model's 1:1 threshold 0.073)
comes close to failing (cosine distance from frame 116: 0.051 at 121, 0.069 at 122, 0.080 at 124).
Mirrored, the same frames are a turn to their left, so a real head can answer either challenge direction.
Frame 54 is the clip's most frontal view (the one to enrol).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

CLIP = Path("live") / "interview_head_turns.avi"
TURN_START, TURN_END = 116, 121  # inclusive: 6 frames, 0.24 s
TURN_DIRECTION = "right"  # the person's own, unmirrored
FRONTAL_FRAME = 54
FRAME_W, FRAME_H = 640, 480
# A printed photo's motion for tests: turned 38 degrees about its vertical axis. The embedder's first thresholds
# called it planar with the widest margin of the turns tried (25-45 degrees, either way); with the tuned ones
# (planarity 0.83 against 0.32) every turn from 33 degrees is, and 24 dev photos turned 35 degrees either way
# gave 43 presentation_attack, 5 no_turn, 0 live. The detector's error rates are bench/liveness.py's.
PRINT_TURN: dict[str, Any] = {"direction": "right", "degrees": 38.0}


def read_clip(path: Path) -> list[np.ndarray]:
    """Every frame of a video as BGR arrays."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        capture.release()
    if not frames:
        raise FileNotFoundError(f"no frames read from {path}")
    return frames


def camera_frame(frame: np.ndarray) -> np.ndarray:
    """A frame scaled to the kiosk's 640x480 camera size."""
    import cv2

    return cv2.resize(frame, (FRAME_W, FRAME_H), interpolation=cv2.INTER_LINEAR)


def jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(data)


def turn(frames: list[np.ndarray], direction: str, lead: int = 2) -> list[np.ndarray]:
    """The clip's turn as camera frames, after `lead` more frames of its start (the person not moving yet: 8
    frames by default, a burst), mirrored when `direction` ("left" | "right") is not the clip's own."""
    chosen = [camera_frame(frames[i]) for i in [TURN_START] * lead + list(range(TURN_START, TURN_END + 1))]
    return chosen if direction == TURN_DIRECTION else [np.ascontiguousarray(f[:, ::-1]) for f in chosen]


def planar_turn(photo: np.ndarray, direction: str, n: int = 8, degrees: float = 35.0) -> list[np.ndarray]:
    """A printed photo turned like a head: the picture rotates about its vertical axis (the side of the person's
    `direction` recedes), with a small sideways drift, seen by a pinhole camera. Every point moves by one
    homography per frame: what a flat attack looks like to the parallax test."""
    import cv2

    h, w = photo.shape[:2]
    f = 1.2 * FRAME_W
    sign = 1.0 if direction == "left" else -1.0  # a left turn carries the nose towards the image's right
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]], dtype=np.float32)
    scale = 0.8 * FRAME_H / h
    depth = f  # the picture's centre this far from the camera, in its own (scaled) pixel units
    out = []
    for k in range(n):
        angle = np.deg2rad(-sign * degrees * k / max(n - 1, 1))  # a left turn: the image's right edge recedes
        drift = sign * 12.0 * k / max(n - 1, 1)
        projected = []
        for x, y in corners * scale:
            # the print rotates about its vertical centre line; a positive angle brings its right edge closer
            xr, zr = x * np.cos(angle), depth - x * np.sin(angle)
            projected.append([FRAME_W / 2 + drift + f * xr / zr, FRAME_H / 2 + f * y / zr])
        source = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
        matrix = cv2.getPerspectiveTransform(source, np.array(projected, dtype=np.float32))
        out.append(cv2.warpPerspective(photo, matrix, (FRAME_W, FRAME_H), borderValue=(128, 128, 128)))
    return out
