"""The burst check of POST /v1/liveness: did a live head turn the asked way?

A burst comes whole, or streamed in parts as the kiosk captures (`BurstCheck`, `Streams`): each part is decoded and
tracked on arrival, so the burst's end waits only for its last frames.

Cost (issue 17: at most twice a plain /v1/embed): MTCNN runs on ONE frame; the face is then tracked through
the burst by dlib's 68-point predictor (~1 ms a frame, each frame searched in the box of the previous frame's
points); MTCNN runs again only where the track is lost. Only the most frontal frame (the one the gateway decides
on) and the first and last frames (same person throughout?) are embedded, in one batch, and only when the
geometry already says live.

Decision, in this order (thresholds: `EmbedderSettings.liveness`):
1. the landmarks' shape hardly changed (deformation < min_deformation): nothing to test -> no_turn; it changed
   and the nose stayed where the inner face's homography puts it (planarity >= max_planarity): a flat picture
   -> presentation_attack / planar_motion;
2. the head turned at least min_turn_deg the other way (even if also the asked way: a shake) -> wrong_direction;
3. it did not turn min_turn_deg the asked way -> no_turn;
4. the first or last frame's face is not the frontal frame's person -> face_changed;
5. live.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from services.common.errors import Conflict, NotFound, Unprocessable
from services.contracts.calibration import load_calibration
from services.contracts.embedder import Face, QualityProfile, QualityReason
from services.contracts.liveness import LivenessFailure, LivenessResponse, LivenessVerdict, TurnDirection
from services.embedder.align import extract_chips
from services.embedder.detector import Detection
from services.embedder.landmarks import ShapePredictor, box_from_mtcnn, box_from_points, five_points, mtcnn_box
from services.embedder.liveness_geometry import (
    PlaneFit,
    deformation,
    face_scale,
    head_parallax,
    plane_fit,
    texture_parallax,
    yaw_degrees,
)
from services.embedder.metrics import STREAMS, STREAMS_OPEN
from services.embedder.pipeline import FacePipeline, face_message
from services.embedder.quality import assess_face, image_reasons
from services.embedder.settings import LivenessThresholds

# A tracked face whose size jumps by more than this factor between frames, or whose centre leaves the frame, is
# lost: the predictor always returns 68 points, even on a wall, so the track itself must look sane.
MAX_SCALE_JUMP = 1.5
TEXTURE_POINTS = 100  # corners of the face's texture followed through the burst
CORNER_BORDER = 4  # px around the face's outline that the corner measure reads (2) and compares (1) beyond it
MIN_FLOWED = 20  # of the 68 points, followed by optical flow
MAX_FLOW_DISAGREEMENT = 0.35  # predictor vs flow, in eye-to-mouth distances
REFINE_STEPS = 3  # predictor passes on the detected frame: MTCNN's box is only a first guess of dlib's
# The first frame's coarse search (first_pass_face_px) stands when its largest face is at least this many times
# the coarse minimum: a second face of multiple_faces_ratio (0.8) of it is then above the minimum too, with room
# for MTCNN's own size jitter between pyramid levels.
FIRST_PASS_MARGIN = 1.5


class FramesDiffer(Unprocessable):
    code = "frames_differ"


@dataclass(frozen=True)
class Geometry:
    """The landmark-only part of the decision."""

    failure: LivenessFailure | None
    turn: float  # signed, degrees; positive: the asked direction
    planarity: float
    deformation: float
    frontal: int  # index of the most frontal frame
    yaws: list[float]


def _sane(points: np.ndarray, prev: np.ndarray, shape: tuple[int, int]) -> bool:
    h, w = shape
    cx, cy = points[27:36].mean(0)  # the nose
    if not (0 <= cx < w and 0 <= cy < h):
        return False
    ratio = face_scale(points) / max(face_scale(prev), 1e-6)
    return 1 / MAX_SCALE_JUMP <= ratio <= MAX_SCALE_JUMP


def settle(predictor: ShapePredictor, grey: np.ndarray, det: Detection) -> np.ndarray:
    box = box_from_mtcnn(det.box, det.landmarks)
    points = predictor.predict(grey, box)
    for _ in range(REFINE_STEPS - 1):
        points = predictor.predict(grey, box_from_points(points, box[2]))
    return points


def _nearest(dets: list[Detection], prev: np.ndarray) -> Detection | None:
    if not dets:
        return None
    centre = prev[27:36].mean(0)
    return min(dets, key=lambda d: float(np.hypot(*(d.box[:2] + d.box[2:] / 2 - centre))))


def _flow(
    prev_grey: np.ndarray, grey: np.ndarray, prev: np.ndarray, texture: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray]:
    """Pyramidal Lucas-Kanade from one frame to the next, in one call: where the previous frame's 68 points went
    (their median shift; None when too few were followed) and where the texture points went (NaN once lost)."""
    start = np.vstack([prev, texture]).astype(np.float32).reshape(-1, 1, 2)
    alive = np.isfinite(start.reshape(-1, 2)).all(1)
    start[~alive] = 0.0
    moved, status, _ = cv2.calcOpticalFlowPyrLK(prev_grey, grey, start, start.copy(), winSize=(21, 21), maxLevel=3)
    ok = (status.ravel() == 1) & alive
    moved = moved.reshape(-1, 2).astype(np.float64)
    moved[~ok] = np.nan
    n = len(prev)
    if ok[:n].sum() < MIN_FLOWED:
        return None, moved[n:]
    shift = np.median(moved[:n][ok[:n]] - start.reshape(-1, 2)[:n][ok[:n]], axis=0)
    return np.asarray(prev + shift, np.float64), moved[n:]


def _texture_points(grey: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Corners inside the face's outline (the convex hull of its 68 points): the skin's own texture, followed
    by optical flow with no model in the loop (the predictor, trained on heads, can draw a foreshortened
    print's landmarks as a turned head's)."""
    hull = cv2.convexHull(points.astype(np.int32))
    # Only the hull's bounding box (and a border for the corner measure's 3x3 gradient, 3x3 window and 3x3
    # maximum) is searched: the same corners as on the whole frame, for a tenth of the pixels.
    x, y, w, h = cv2.boundingRect(hull)
    x0, y0 = max(x - CORNER_BORDER, 0), max(y - CORNER_BORDER, 0)
    crop = grey[y0 : y + h + CORNER_BORDER, x0 : x + w + CORNER_BORDER]
    if crop.size == 0:
        return np.zeros((0, 2))
    mask = np.zeros_like(crop)
    cv2.fillConvexPoly(mask, hull - np.array([x0, y0], np.int32), 255)
    corners = cv2.goodFeaturesToTrack(crop, TEXTURE_POINTS, 0.01, 3, mask=mask)
    if corners is None:
        return np.zeros((0, 2))
    return corners.reshape(-1, 2).astype(np.float64) + np.array([x0, y0], np.float64)


@dataclass(frozen=True)
class Track:
    points: list[np.ndarray]  # 68 x 2 per frame
    texture: list[np.ndarray]  # N x 2 per frame: corners found in frame 0, followed (NaN once lost)


class Tracker:
    """`track`, one frame at a time: a streamed burst's frames arrive in parts (`BurstCheck`)."""

    def __init__(
        self,
        predictor: ShapePredictor,
        first_rgb: np.ndarray,
        first: Detection,
        redetect: Callable[[np.ndarray], list[Detection]] | None = None,
    ) -> None:
        self.predictor = predictor
        self.redetect = redetect
        self.side = float(box_from_mtcnn(first.box, first.landmarks)[2])
        self._grey = cv2.cvtColor(first_rgb, cv2.COLOR_RGB2GRAY)
        self.points = [settle(predictor, self._grey, first)]
        self.texture = [_texture_points(self._grey, self.points[0])]
        self.lost = False

    def add(self, rgb: np.ndarray) -> bool:
        """Follow the face into the next frame; False (for good) once it is lost."""
        if self.lost:
            return False
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        prev = self.points[-1]
        guess, moved = _flow(self._grey, grey, prev, self.texture[-1])
        cur = None
        if guess is not None:
            cur = self.predictor.predict(grey, box_from_points(guess, self.side))
            if not _agree(cur, guess, grey.shape[:2]):
                cur = None
        if cur is None:
            moved[:] = np.nan  # the flow lost the face: its texture is no evidence any more
            found = _nearest(self.redetect(rgb), prev) if self.redetect is not None else None
            if found is not None:
                cur = settle(self.predictor, grey, found)
            if cur is None or not _sane(cur, prev, grey.shape[:2]):
                self.lost = True
                return False
        self.points.append(cur)
        self.texture.append(moved)
        self._grey = grey
        return True

    def result(self) -> Track | None:
        return None if self.lost else Track(self.points, self.texture)


def track(
    predictor: ShapePredictor,
    frames: Sequence[np.ndarray],
    first: Detection,
    redetect: Callable[[np.ndarray], list[Detection]] | None = None,
) -> Track | None:
    """68 points per frame, the face followed from `first` (MTCNN on frame 0); None when it is lost for good.

    Each frame: optical flow carries the previous points over (a hand-held picture or a quick head can move
    50+ px between frames, beyond the predictor's reach), the predictor places the 68 points in a box of the
    detection's size around them (a burst lasts 1-2 s: the face's size hardly changes), and they must agree
    with the flow. Where they do not, `redetect(rgb) -> list[Detection]` (MTCNN) gets one chance. The same
    flow call follows the face's texture corners.
    """
    tracker = Tracker(predictor, frames[0], first, redetect)
    for rgb in frames[1:]:
        if not tracker.add(rgb):
            return None
    return tracker.result()


def _agree(cur: np.ndarray, guess: np.ndarray, shape: tuple[int, int]) -> bool:
    """The predictor's points where the flow says the face went (same place, same size)."""
    offset = float(np.hypot(*(np.median(cur, axis=0) - np.median(guess, axis=0))))
    return offset <= MAX_FLOW_DISAGREEMENT * face_scale(guess) and _sane(cur, guess, shape)


def _median3(values: list[float]) -> np.ndarray:
    v = np.asarray(values, np.float64)
    if len(v) < 3:
        return v
    padded = np.concatenate([v[:1], v, v[-1:]])
    return np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)


@dataclass(frozen=True)
class TurnMeasures:
    """What the tracked points say, before any threshold."""

    towards: float  # largest turn in the asked direction from the first frames, degrees
    away: float  # largest turn the other way
    fit: PlaneFit  # frontal frame vs the frame whose shape differs most from it
    frontal: int
    yaws: list[float]
    texture: float | None = None  # texture_parallax from frame 0 to the frame that changed most; None: untested
    fit_turn: float = 0.0  # |yaw change| between the two frames the plane fit compares, degrees


def measure_turn(
    points: Sequence[np.ndarray], direction: TurnDirection, texture: Sequence[np.ndarray] = ()
) -> TurnMeasures:
    yaws = [yaw_degrees(p) for p in points]
    smooth = _median3(yaws)  # one bad frame of the predictor must not make a turn
    sign = 1.0 if direction == TurnDirection.LEFT else -1.0
    rel = sign * (smooth - smooth[0])
    frontal = int(np.argmin(np.abs(smooth)))
    # The plane tests compare the frame that changed most (shape, after a similarity) with a reference frame.
    far = int(np.argmax([deformation(points[frontal], p) for p in points]))
    fit = plane_fit(points[frontal], points[far])
    tex = None
    if texture:
        moved = int(np.argmax([deformation(points[0], p) for p in points]))
        tex = texture_parallax(texture[0], texture[moved], face_scale(points[0])) if moved else None
    fit_turn = abs(yaws[far] - yaws[frontal])
    return TurnMeasures(float(rel.max()), float(-rel.min()), fit, frontal, yaws, tex, fit_turn)


def _head_like(m: TurnMeasures, rules: LivenessThresholds) -> bool:
    """The nose's parallax is at least `turn_parallax_ratio` of a generic head's for the turn measured between
    the same two frames (floored at min_turn_deg): a small real turn has a small parallax, which the fixed
    max_planarity limit alone refuses."""
    if rules.turn_parallax_ratio <= 0:
        return False
    need = rules.turn_parallax_ratio * head_parallax(max(m.fit_turn, rules.min_turn_deg))
    return m.fit.parallax >= need


def judge(m: TurnMeasures, rules: LivenessThresholds) -> LivenessFailure | None:
    """Steps 1-3 of the decision."""
    if m.fit.deformation < rules.min_deformation:
        # The shape hardly changed: whatever the yaw says, no turn that the parallax test could check.
        return LivenessFailure.NO_TURN
    if m.fit.planarity >= rules.max_planarity and not _head_like(m, rules):
        return LivenessFailure.PLANAR_MOTION
    if m.texture is not None and m.texture < rules.min_texture_parallax:
        return LivenessFailure.PLANAR_MOTION
    if m.away >= rules.min_turn_deg:
        # Whatever it did the asked way too: an answer turns one way, and a burst across a head shake (or a
        # recording of one) would otherwise answer either challenge (session 7: 0 of 661 real turns of nine
        # people turned the other way this far).
        return LivenessFailure.WRONG_DIRECTION
    if m.towards < rules.min_turn_deg:
        return LivenessFailure.NO_TURN
    return None


def judge_geometry(t: Track, direction: TurnDirection, rules: LivenessThresholds) -> Geometry:
    """Steps 1-3 of the decision from the tracked points alone."""
    m = measure_turn(t.points, direction, t.texture)
    turn = m.towards if m.towards >= m.away else -m.away
    return Geometry(judge(m, rules), round(turn, 2), round(m.fit.planarity, 4), m.fit.deformation, m.frontal, m.yaws)


def _verdict(failure: LivenessFailure | None) -> LivenessVerdict:
    if failure is None:
        return LivenessVerdict.LIVE
    if failure == LivenessFailure.PLANAR_MOTION:
        return LivenessVerdict.PRESENTATION_ATTACK
    return LivenessVerdict.LIVENESS_FAILED


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(1.0 - a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def same_face_limit(pipeline: FacePipeline) -> float:
    """The FACE_CHANGED distance: the setting, else the model's calibrated threshold at same_face_fmr."""
    rules = pipeline.settings.liveness
    if rules.same_face_distance is not None:
        return rules.same_face_distance
    cal = load_calibration(pipeline.model.descriptor.id)
    return cal.verify_threshold(rules.same_face_fmr) if cal is not None else pipeline.descriptor.verify_threshold


def first_pass_stands(dets: list[Detection], first_pass_face_px: int) -> bool:
    """Whether the coarse search of the burst's first frame found everything the decision needs."""
    return first_pass_face_px > 0 and bool(dets) and dets[0].size >= FIRST_PASS_MARGIN * first_pass_face_px


def detect_first(pipeline: FacePipeline, rgb: np.ndarray) -> list[Detection]:
    """`_detect_first` without the batcher (bench/liveness.py's tuning path)."""
    px = pipeline.settings.liveness.first_pass_face_px
    dets = pipeline.detector.detect(rgb, px) if px else []
    return dets if first_pass_stands(dets, px) else pipeline.detector.detect(rgb)


async def _detect_first(pipeline: FacePipeline, rgb: np.ndarray) -> list[Detection]:
    """MTCNN on the burst's first frame: the coarse search, and the full one only where it may have missed."""
    px = pipeline.settings.liveness.first_pass_face_px
    dets = await pipeline.adetect(rgb, px) if px else []
    return dets if first_pass_stands(dets, px) else await pipeline.adetect(rgb)


async def _decode_and_detect(pipeline: FacePipeline, frames: list[bytes]) -> tuple[list[np.ndarray], list[Detection]]:
    """Every frame decoded, and MTCNN on the first: the detection starts as soon as the first frame is decoded,
    while the others decode, so the burst's answer does not wait for both in turn."""
    first = (await pipeline.adecode(frames[0])).rgb
    detecting = asyncio.ensure_future(_detect_first(pipeline, first))
    try:
        rest = await _decode(pipeline, frames[1:], first.shape)
    except BaseException:
        detecting.cancel()  # the batcher skips a cancelled caller's frame
        raise
    return [first, *rest], await detecting


async def _decode(pipeline: FacePipeline, frames: Sequence[bytes], shape: tuple[int, ...]) -> list[np.ndarray]:
    rgbs = [im.rgb for im in await asyncio.gather(*(pipeline.adecode(data) for data in frames))]
    if any(rgb.shape != shape for rgb in rgbs):
        raise FramesDiffer("the frames of a burst must all have the same size (one camera)")
    return rgbs


class BurstCheck:
    """One burst's check, fed in parts (a streamed burst: POST /v1/liveness/bursts/{id}/frames as the kiosk
    captures, then POST /v1/liveness with the rest) or all at once: each part is decoded and tracked as it
    comes (MTCNN on the first frame only), so what is left when the last frame arrives is that frame's tracking,
    the judging and the embedding. Fed one way or the other, the same frames get the same verdict."""

    def __init__(self, pipeline: FacePipeline) -> None:
        self.pipeline = pipeline
        self.rgbs: list[np.ndarray] = []
        self.first: Detection | None = None
        self.failure: LivenessFailure | None = None  # decided before the burst's end: no_face, multiple, lost
        self.tracker: Tracker | None = None
        self.embedded: dict[int, np.ndarray] = {}  # frame index -> embedding, where computed ahead
        self.lock = asyncio.Lock()  # one part at a time, in order

    @property
    def frames(self) -> int:
        return len(self.rgbs)

    def expect(self, offset: int) -> None:
        """The next part must follow the frames already here."""
        if offset != self.frames:
            STREAMS.labels("out_of_step").inc()
            raise StreamOutOfStep(f"{self.frames} frames of this burst arrived, not {offset}: send the whole burst")

    @property
    def nbytes(self) -> int:
        return sum(rgb.nbytes for rgb in self.rgbs)

    async def add(self, frames: list[bytes]) -> None:
        """Decode a part (all of it, or nothing: a bad frame is a 4xx and the burst stays as it was), then track."""
        if not self.rgbs:
            rgbs, dets = await _decode_and_detect(self.pipeline, frames)
            self.rgbs = rgbs
            reasons = image_reasons(dets, self.pipeline.settings.gate)
            if QualityReason.NO_FACE in reasons:
                self.failure = LivenessFailure.NO_FACE
            elif QualityReason.MULTIPLE_FACES in reasons:
                self.failure = LivenessFailure.MULTIPLE_FACES
            else:
                self.first = dets[0]
                await asyncio.to_thread(self._track, rgbs)
            return
        rgbs = await _decode(self.pipeline, frames, self.rgbs[0].shape)
        self.rgbs += rgbs
        if self.failure is None:
            await asyncio.to_thread(self._track, rgbs)

    def _track(self, rgbs: list[np.ndarray]) -> None:
        if self.tracker is None:
            assert self.first is not None
            self.tracker = Tracker(self.pipeline.landmarks, rgbs[0], self.first, self.pipeline.detector.detect)
            rgbs = rgbs[1:]
        for rgb in rgbs:
            if not self.tracker.add(rgb):
                self.failure = LivenessFailure.FACE_LOST
                return

    async def embed_first(self) -> None:
        """Embed the first frame's face ahead of the burst's end (a streamed burst: a live answer needs it, and
        the kiosk is still capturing)."""
        if self.failure is None and self.first is not None and 0 not in self.embedded:
            chip = extract_chips(self.rgbs[0], [self.first], self.pipeline.model.geometry, self.pipeline.align)[0]
            self.embedded[0] = (await self.pipeline.aembed_chips([chip]))[0]

    async def finish(self, direction: TurnDirection) -> LivenessResponse:
        """Judge the tracked burst and embed what the decision needs."""
        pipeline = self.pipeline

        def respond(
            failure: LivenessFailure | None,
            geo: Geometry | None = None,
            face: Face | None = None,
            dist: float | None = None,
        ) -> LivenessResponse:
            return LivenessResponse(
                model=pipeline.descriptor,
                verdict=_verdict(failure),
                failure=failure,
                frames=self.frames,
                turn=geo.turn if geo else 0.0,
                planarity=geo.planarity if geo else 0.0,
                face=face,
                face_distance=None if dist is None else round(dist, 4),
            )

        tracked = self.tracker.result() if self.tracker is not None else None
        if self.failure is not None or tracked is None or self.first is None:
            return respond(self.failure or LivenessFailure.FACE_LOST)
        geo = judge_geometry(tracked, direction, pipeline.settings.liveness)
        if geo.failure is not None:
            return respond(geo.failure, geo)

        picked = pick_faces(pipeline, self.rgbs, self.first, tracked.points, geo.frontal)
        todo = [k for k, i in enumerate(picked.frames) if i not in self.embedded]
        if todo:
            fresh = await pipeline.aembed_chips([picked.chips[k] for k in todo])
            self.embedded.update({picked.frames[k]: e for k, e in zip(todo, fresh, strict=True)})
        emb = np.stack([self.embedded[i] for i in picked.frames])
        dist = picked.distance(emb)
        front = picked.frontal
        quality = assess_face(picked.faces[front], picked.chips[front], pipeline.rules(QualityProfile.GATE))
        face = face_message(picked.faces[front], quality, emb[front])
        return respond(LivenessFailure.FACE_CHANGED if dist > same_face_limit(pipeline) else None, geo, face, dist)


async def check_burst(pipeline: FacePipeline, frames: list[bytes], direction: TurnDirection) -> LivenessResponse:
    """Decode, detect once, track, judge, and embed what the decision needs: a whole burst at once."""
    check = BurstCheck(pipeline)
    await check.add(frames)
    return await check.finish(direction)


class StreamGone(NotFound):
    code = "burst_unknown"


class StreamOutOfStep(Conflict):
    code = "burst_out_of_step"


class Streams:
    """Bursts being streamed, in this process's memory: each for `ttl_s` from its first part, at most `max_open`
    (the oldest is dropped first). A burst that is gone (expired, dropped, another replica, a restart) is a 404 at
    its end, and the gate posts the whole burst instead: streaming only ever saves time, never decides."""

    def __init__(self, pipeline: FacePipeline, ttl_s: float, max_open: int, max_bytes: int = 1 << 62) -> None:
        self.pipeline = pipeline
        self.ttl_s = ttl_s
        self.max_open = max_open
        self.max_bytes = max_bytes  # decoded frames held, all bursts together: a gate key cannot fill the memory
        self._open: OrderedDict[str, tuple[float, BurstCheck]] = OrderedDict()

    def trim(self) -> None:
        """Drop the oldest bursts while the frames held exceed `max_bytes` (the one just fed too, if it alone
        does: its gate sends the burst whole)."""
        held = sum(check.nbytes for _, check in self._open.values())
        while self._open and held > self.max_bytes:
            held -= self._drop_oldest("dropped").nbytes

    def _drop_oldest(self, outcome: str) -> BurstCheck:
        check = self._open.popitem(last=False)[1][1]
        STREAMS.labels(outcome).inc()
        STREAMS_OPEN.set(len(self._open))
        return check

    def _prune(self) -> None:
        now = time.monotonic()
        while self._open and next(iter(self._open.values()))[0] < now - self.ttl_s:
            self._drop_oldest("expired")

    def open(self, burst_id: str) -> BurstCheck:
        self._prune()
        if burst_id in self._open:
            begun = self._open[burst_id][1]
            if begun.frames:
                STREAMS.labels("out_of_step").inc()
                raise StreamOutOfStep("this burst has begun: send its next frames with their offset")
            return begun  # its first part was refused (a bad frame): this one begins it
        while len(self._open) >= self.max_open:
            self._drop_oldest("dropped")
        check = BurstCheck(self.pipeline)
        self._open[burst_id] = (time.monotonic(), check)
        STREAMS.labels("begun").inc()
        STREAMS_OPEN.set(len(self._open))
        return check

    def get(self, burst_id: str) -> BurstCheck:
        self._prune()
        if burst_id not in self._open:
            STREAMS.labels("gone").inc()
            raise StreamGone("no such burst here (expired, dropped or never begun): send the whole burst")
        return self._open[burst_id][1]

    def close(self, burst_id: str) -> BurstCheck:
        """End a burst (its last frames have come): whatever the answer, it is no longer held."""
        check = self.get(burst_id)
        del self._open[burst_id]
        STREAMS.labels("ended").inc()
        STREAMS_OPEN.set(len(self._open))
        return check

    def __len__(self) -> int:
        return len(self._open)


@dataclass(frozen=True)
class Picked:
    """The faces a live-looking burst embeds: the frontal frame's (the decision's face) and the burst's ends'
    (the same person throughout?), as detections and aligned chips, frame order."""

    frames: list[int]  # their frame indices
    faces: list[Detection]
    chips: list[np.ndarray]
    frontal: int  # index into faces/chips
    first: int
    last: int

    def distance(self, emb: np.ndarray) -> float:
        """The FACE_CHANGED measure: the larger cosine distance from the frontal face to either end's."""
        front = emb[self.frontal]
        return max(_cosine(front, emb[self.first]), _cosine(front, emb[self.last]))


def pick_faces(
    pipeline: FacePipeline, rgbs: Sequence[np.ndarray], first: Detection, points: Sequence[np.ndarray], frontal: int
) -> Picked:
    side = float(box_from_mtcnn(first.box, first.landmarks)[2])
    picks = sorted({frontal, 0, len(points) - 1})
    faces = [
        first
        if i == 0
        else Detection(box=mtcnn_box(points[i], side), landmarks=five_points(points[i]), score=first.score)
        for i in picks
    ]
    chips = [
        extract_chips(rgbs[i], [d], pipeline.model.geometry, pipeline.align)[0]
        for i, d in zip(picks, faces, strict=True)
    ]
    at = {i: k for k, i in enumerate(picks)}
    return Picked(picks, faces, chips, at[frontal], at[0], at[len(points) - 1])
