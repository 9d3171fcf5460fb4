"""Synthetic presentation attacks on the head-turn challenge, rendered from real photos and real video (issue 17).

No spoof dataset is installable here, so attacks are rendered through a pinhole camera (640x480, f = 600 px, a
webcam's ~56 degree field of view) the way an attacker would present them to the kiosk:

- `print`: a photo printed (12-25 cm tall) and held 35-60 cm from the camera, moved along a random 6-DoF path
  that rotates it 15-45 degrees about its vertical axis (to mimic the asked turn) with random tilt, roll, shifts
  and depth changes: a homography of the photo per frame;
- `curved`: the same print bent on a vertical cylinder (radius 6-20 cm, convex or concave towards the camera),
  rendered as 32 planar strips, moved the same way;
- `screen`: the photo on a phone (65 x 140 mm, 400 ppi): display gamma and contrast, an RGB subpixel grid that
  the camera aliases into moire, a black bezel, and a specular reflection that moves with the phone;
- `replay`: a recorded real head turn (a bona fide clip segment) played on that phone, held with hand jitter,
  against a challenge the recording did not answer (or a random one).

Every frame then goes through the camera: mild defocus, sensor noise, JPEG. Backgrounds are random smooth
gradients with noise. Everything is drawn from one numpy Generator, so a seed gives the same bursts.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

WIDTH, HEIGHT, FOCAL = 640, 480, 600.0
K = np.array([[FOCAL, 0, WIDTH / 2], [0, FOCAL, HEIGHT / 2], [0, 0, 1]])
STRIPS = 32  # a cylinder as this many planar strips
FACE_SHARE = 0.45  # the face's share of a portrait's height (the bench crops photos to their face box x 2.2)


class AttackKind(StrEnum):
    PRINT = "print"
    CURVED = "curved"
    SCREEN = "screen"
    REPLAY = "replay"


@dataclass(frozen=True)
class Pose:
    rotation: np.ndarray  # 3x3, object -> camera
    translation: np.ndarray  # mm, the object's centre in camera coordinates


def rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    r, _ = cv2.Rodrigues(np.radians([pitch, 0.0, 0.0]))
    y, _ = cv2.Rodrigues(np.radians([0.0, yaw, 0.0]))
    z, _ = cv2.Rodrigues(np.radians([0.0, 0.0, roll]))
    return np.asarray(z @ y @ r)


def random_path(rng: np.random.Generator, n: int, distance: float) -> list[Pose]:
    """A hand-held 6-DoF path: a 15-45 degree swing about the vertical axis (either way), with a smooth random
    walk of tilt and roll (up to ~10 degrees), sideways/vertical shifts and depth changes (up to ~8% and ~12% of
    the distance: the picture stays in view)."""
    swing = rng.uniform(15, 45) * rng.choice([-1.0, 1.0])
    t = np.linspace(0.0, 1.0, n)
    ease = 0.5 - 0.5 * np.cos(np.pi * t)

    def walk(scale: float) -> np.ndarray:
        steps = rng.normal(0.0, 1.0, n).cumsum()
        return np.asarray(scale * (steps - steps.mean()) / max(float(np.abs(steps).max()), 1.0))

    yaw0 = rng.uniform(-10, 10)
    pitch, roll = walk(10.0) + rng.uniform(-8, 8), walk(8.0) + rng.uniform(-5, 5)
    d = distance / 500.0
    dx, dy, dz = d * (walk(40.0) + rng.uniform(-40, 40)), d * (walk(40.0) + rng.uniform(-30, 30)), d * walk(60.0)
    return [
        Pose(rotation(pitch[i], yaw0 + swing * ease[i], roll[i]), np.array([dx[i], dy[i], distance + dz[i]]))
        for i in range(n)
    ]


def _project(points: np.ndarray, pose: Pose) -> np.ndarray:
    cam = points @ pose.rotation.T + pose.translation
    uv = cam @ K.T
    return np.asarray(uv[:, :2] / uv[:, 2:3], np.float32)


def _paste(canvas: np.ndarray, texture: np.ndarray, src: np.ndarray, dst: np.ndarray) -> None:
    """Warp the quad `src` of `texture` onto the quad `dst` of `canvas` (in place), within dst's bounding box."""
    x0, y0 = np.clip(np.floor(dst.min(0)).astype(int), 0, [WIDTH, HEIGHT])
    x1, y1 = np.clip(np.ceil(dst.max(0)).astype(int) + 1, 0, [WIDTH, HEIGHT])
    if x1 - x0 < 1 or y1 - y0 < 1:
        return
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    h = shift @ cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
    size = (int(x1 - x0), int(y1 - y0))
    warped = cv2.warpPerspective(texture, h, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full(texture.shape[:2], 255, np.uint8), h, size, flags=cv2.INTER_LINEAR)
    alpha = mask[:, :, None].astype(np.float32) / 255.0
    roi = canvas[y0:y1, x0:x1]
    roi[:] = (roi * (1 - alpha) + warped * alpha).astype(np.uint8)


def render_plane(canvas: np.ndarray, texture: np.ndarray, size_mm: tuple[float, float], pose: Pose) -> None:
    """A flat rectangle of `size_mm` (width, height) carrying `texture`, at `pose`."""
    w, h = size_mm
    corners = np.array([[-w / 2, -h / 2, 0], [w / 2, -h / 2, 0], [w / 2, h / 2, 0], [-w / 2, h / 2, 0]])
    th, tw = texture.shape[:2]
    _paste(canvas, texture, np.array([[0, 0], [tw, 0], [tw, th], [0, th]]), _project(corners, pose))


def render_cylinder(
    canvas: np.ndarray, texture: np.ndarray, size_mm: tuple[float, float], pose: Pose, radius: float
) -> None:
    """The print bent on a vertical cylinder of `radius` mm (negative: concave towards the camera)."""
    w, h = size_mm
    th, tw = texture.shape[:2]
    arc = np.linspace(-w / 2, w / 2, STRIPS + 1)
    x = np.abs(radius) * np.sin(arc / np.abs(radius))
    z = radius * (1 - np.cos(arc / np.abs(radius)))  # away from the camera at the edges when convex
    # Far strips first, so nearer ones cover them where the bend folds the print over itself.
    order = sorted(range(STRIPS), key=lambda i: -(pose.rotation @ [0, 0, (z[i] + z[i + 1]) / 2])[2])
    for i in order:
        quad = np.array(
            [[x[i], -h / 2, z[i]], [x[i + 1], -h / 2, z[i + 1]], [x[i + 1], h / 2, z[i + 1]], [x[i], h / 2, z[i]]]
        )
        u0, u1 = tw * i / STRIPS, tw * (i + 1) / STRIPS
        _paste(canvas, texture, np.array([[u0, 0], [u1, 0], [u1, th], [u0, th]]), _project(quad, pose))


def background(rng: np.random.Generator) -> np.ndarray:
    """A smooth random scene: a two-colour gradient with low-frequency blobs and fine noise."""
    a, b = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    t = ((xx - WIDTH / 2) * np.cos(angle) + (yy - HEIGHT / 2) * np.sin(angle)) / WIDTH + 0.5
    img = a * (1 - t[..., None]) + b * t[..., None]
    blobs = cv2.resize(rng.normal(0, 25, (6, 8, 3)).astype(np.float32), (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    return np.asarray(np.clip(img + blobs + rng.normal(0, 4, img.shape), 0, 255), np.uint8)


def camera(rgb: np.ndarray, rng: np.random.Generator, quality: int) -> bytes:
    """What the kiosk camera sends: slight defocus, sensor noise, JPEG."""
    sigma = rng.uniform(0.3, 1.0)
    img = cv2.GaussianBlur(rgb, (0, 0), sigma).astype(np.float32)
    img += rng.normal(0, rng.uniform(1.5, 4.0), img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _photo_size(rng: np.random.Generator, texture: np.ndarray) -> tuple[float, float]:
    th, tw = texture.shape[:2]
    height = rng.uniform(120, 250)
    return height * tw / th, height


def phone_texture(
    content: np.ndarray, rng: np.random.Generator, landscape: bool = False
) -> tuple[np.ndarray, tuple[float, float]]:
    """`content` shown on a phone: the screen image (bezel included) and its size in mm.

    The screen is drawn at 3 texels per display pixel so each pixel carries its R, G and B stripes; the warp to
    the camera then samples that grid below its period, which is what makes moire on a filmed screen.
    """
    screen_w, screen_h, bezel = 65.0, 140.0, rng.uniform(3.0, 8.0)
    if landscape:  # a video is watched with the phone turned sideways
        screen_w, screen_h = screen_h, screen_w
    # display pixels across (a 400 ppi phone has ~1000; ~4 per camera pixel at these distances is plenty)
    px_w = round(4.5 * screen_w)
    px_h = round(px_w * screen_h / screen_w)
    ch, cw = content.shape[:2]
    scale = min(px_w / cw, px_h / ch)
    shown = cv2.resize(content, (max(1, round(cw * scale)), max(1, round(ch * scale))), interpolation=cv2.INTER_AREA)
    screen = np.zeros((px_h, px_w, 3), np.uint8)
    oy, ox = (px_h - shown.shape[0]) // 2, (px_w - shown.shape[1]) // 2
    screen[oy : oy + shown.shape[0], ox : ox + shown.shape[1]] = shown
    # Display response: gamma, compressed contrast (a lit black is grey), a colour cast.
    lin = (screen.astype(np.float32) / 255.0) ** rng.uniform(0.8, 1.25)
    lin = 0.08 + 0.88 * lin * rng.uniform(0.9, 1.1, 3)
    up = np.repeat(np.repeat(lin, 3, axis=0), 3, axis=1)
    stripes = np.zeros((1, 3, 3), np.float32)
    for c in range(3):
        stripes[0, c, c] = 1.0
    # subpixels: each texel lit in its own colour, with bleed from its neighbours, and a darker row between
    # pixel rows; `depth` is how much of that survives the lens (near 0 behind a diffuser, more when close)
    grid = np.tile(stripes, (up.shape[0], up.shape[1] // 3, 1)) * 3.0
    grid[2::3] *= 0.6
    depth = rng.uniform(0.1, 0.35)
    grid = 1.0 + depth * (grid - grid.mean())
    tex = np.clip(up * grid * 255.0, 0, 255).astype(np.uint8)
    b = round(bezel / screen_w * tex.shape[1])
    framed = cv2.copyMakeBorder(tex, b, b, b, b, cv2.BORDER_CONSTANT, value=(12, 12, 14))
    return framed, (screen_w + 2 * bezel, screen_h + 2 * bezel)


def reflection(canvas: np.ndarray, rng: np.random.Generator, pose: Pose, strength: float) -> None:
    """A soft specular highlight that slides as the phone turns (a window or lamp mirrored in its glass)."""
    yaw = float(np.degrees(np.arctan2(pose.rotation[0, 2], pose.rotation[2, 2])))
    centre = _project(np.array([[yaw * 2.0, -30.0, 0.0]]), pose)[0]
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    glow = np.exp(-(((xx - centre[0]) / 90) ** 2 + ((yy - centre[1]) / 60) ** 2))
    canvas[:] = np.clip(canvas + strength * glow[..., None], 0, 255).astype(np.uint8)


def _n_frames(rng: np.random.Generator) -> int:
    return int(rng.integers(6, 11))


def _distance(rng: np.random.Generator, face_mm: float) -> float:
    """How far the attacker holds the picture: so that the face spans 110-220 px, as a visitor's does."""
    return FOCAL * face_mm / rng.uniform(110, 220)


def photo_attack(kind: AttackKind, photo: np.ndarray, rng: np.random.Generator) -> list[bytes]:
    """A print, curved-print or screen attack with one portrait (RGB, the face about FACE_SHARE of its height,
    e.g. a face box grown 2.2x); JPEG frames in capture order."""
    n, quality = _n_frames(rng), int(rng.integers(80, 95))
    if kind == AttackKind.SCREEN:
        # zoomed in between "fit" and about "fill" the screen: the face as large as it goes
        ph, pw = photo.shape[:2]
        zoom = rng.uniform(1.0, 1.8)
        crop_w = min(pw, round(pw / zoom))
        x0 = (pw - crop_w) // 2
        photo = photo[:, x0 : x0 + crop_w]
        texture, size = phone_texture(photo, rng)
        shown = min(65.0 / crop_w, 140.0 / ph) * ph  # the photo's height on the screen, mm
    else:
        texture, size = photo, _photo_size(rng, photo)
        shown = size[1]
    distance = _distance(rng, shown * FACE_SHARE)
    radius = rng.uniform(60, 200) * rng.choice([-1.0, 1.0])
    shine = rng.uniform(30, 110)
    bg = background(rng)
    frames = []
    for pose in random_path(rng, n, distance):
        canvas = bg.copy()
        if kind == AttackKind.CURVED:
            render_cylinder(canvas, texture, size, pose, radius)
        else:
            render_plane(canvas, texture, size, pose)
        if kind == AttackKind.SCREEN:
            reflection(canvas, rng, pose, shine)
        frames.append(camera(canvas, rng, quality))
    return frames


def replay_attack(clip_frames: Sequence[np.ndarray], rng: np.random.Generator) -> list[bytes]:
    """A recorded burst (RGB frames of a real head turn) played on a phone held in front of the camera."""
    quality = int(rng.integers(80, 95))
    landscape = clip_frames[0].shape[1] > clip_frames[0].shape[0]
    distance = rng.uniform(120, 220)
    shine = rng.uniform(20, 80)
    bg = background(rng)
    n = len(clip_frames)
    # The hand: a small drift and tremor, no deliberate turn (the recording turns).
    yaw0, pitch0 = rng.uniform(-10, 10), rng.uniform(-10, 10)
    jitter = rng.normal(0, 1.0, (n, 5)).cumsum(0)
    frames = []
    for i, content in enumerate(clip_frames):
        texture, size = phone_texture(content, rng, landscape)
        pose = Pose(
            rotation(pitch0 + jitter[i, 0], yaw0 + jitter[i, 1], jitter[i, 2]),
            np.array([jitter[i, 3] * 3, jitter[i, 4] * 3, distance]),
        )
        canvas = bg.copy()
        render_plane(canvas, texture, size, pose)
        reflection(canvas, rng, pose, shine)
        frames.append(camera(canvas, rng, quality))
    return frames


def portrait(rgb: np.ndarray, box: np.ndarray, grow: float = 1 / FACE_SHARE) -> np.ndarray:
    """The square crop around a detected face box (x, y, w, h), grown so the face is FACE_SHARE of its height:
    what an attacker prints or shows. Edges are replicated where the crop leaves the photo."""
    x, y, w, h = (float(v) for v in box)
    side = grow * max(w, h)
    cx, cy = x + w / 2, y + h / 2
    m = np.array([[1.0, 0.0, side / 2 - cx], [0.0, 1.0, side / 2 - cy]])
    size = max(32, round(side))
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def read_clip(path: Path) -> list[np.ndarray]:
    """Every frame of a video file, RGB."""
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise FileNotFoundError(f"no frames read from {path}")
    return frames
