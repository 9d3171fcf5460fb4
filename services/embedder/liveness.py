"""The burst check of POST /v1/liveness: did a live head turn the asked way?

Cost (issue 17: at most twice a plain /v1/embed): MTCNN runs on ONE frame; the face is then tracked through
the burst by dlib's 68-point predictor (~1 ms a frame, each frame searched in the box of the previous frame's
points); MTCNN runs again only where the track is lost. Only the most frontal frame (the one the gateway decides
on) and the first and last frames (same person throughout?) are embedded, in one batch, and only when the
geometry already says live.

Decision, in this order (thresholds: `EmbedderSettings.liveness`):
1. the landmarks' shape changed (deformation >= min_deformation) and one homography explains most of the change
   (planarity >= max_planarity): a flat picture -> presentation_attack / planar_motion;
2. the head turned at least min_turn_deg the other way, and further than the asked way -> wrong_direction;
3. it did not turn min_turn_deg the asked way -> no_turn;
4. the first or last frame's face is not the frontal frame's person -> face_changed;
5. live.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from services.common.errors import Unprocessable
from services.contracts.embedder import QualityProfile, QualityReason
from services.contracts.liveness import LivenessFailure, LivenessResponse, LivenessVerdict, TurnDirection
from services.embedder.align import extract_chips
from services.embedder.detector import Detection
from services.embedder.landmarks import ShapePredictor, box_from_mtcnn, box_from_points, five_points, mtcnn_box
from services.embedder.liveness_geometry import PlaneFit, face_scale, plane_fit, yaw_degrees
from services.embedder.pipeline import FacePipeline, face_message
from services.embedder.quality import assess_face, image_reasons
from services.embedder.settings import LivenessThresholds

# A tracked face whose size jumps by more than this factor between frames, or whose centre leaves the frame, is
# lost: the predictor always returns 68 points, even on a wall, so the track itself must look sane.
MAX_SCALE_JUMP = 1.5
REFINE_STEPS = 3  # predictor passes on the detected frame: MTCNN's box is only a first guess of dlib's


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


def _settle(predictor: ShapePredictor, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
    points = predictor.predict(grey, box)
    for _ in range(REFINE_STEPS - 1):
        points = predictor.predict(grey, box_from_points(points))
    return points


def _nearest(dets: list[Detection], prev: np.ndarray) -> Detection | None:
    if not dets:
        return None
    centre = prev[27:36].mean(0)
    return min(dets, key=lambda d: float(np.hypot(*(d.box[:2] + d.box[2:] / 2 - centre))))


def track(
    predictor: ShapePredictor,
    frames: Sequence[np.ndarray],
    first: Detection,
    redetect: Callable[[np.ndarray], list[Detection]] | None = None,
) -> list[np.ndarray] | None:
    """68 points per frame, the face followed from `first` (MTCNN on frame 0); None when it is lost for good.

    `redetect(rgb) -> list[Detection]` runs MTCNN on a frame whose track looks lost (None: no second chance).
    """
    greys = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    points = [_settle(predictor, greys[0], box_from_mtcnn(first.box))]
    for rgb, grey in zip(frames[1:], greys[1:], strict=True):
        prev = points[-1]
        cur = predictor.predict(grey, box_from_points(prev))
        cur = predictor.predict(grey, box_from_points(cur))  # one refinement: the head moved since
        if not _sane(cur, prev, grey.shape[:2]):
            found = _nearest(redetect(rgb), prev) if redetect is not None else None
            if found is None:
                return None
            cur = _settle(predictor, grey, box_from_mtcnn(found.box))
            if not _sane(cur, prev, grey.shape[:2]):
                return None
        points.append(cur)
    return points


def _median3(values: list[float]) -> np.ndarray:
    v = np.asarray(values, np.float64)
    if len(v) < 3:
        return v
    padded = np.concatenate([v[:1], v, v[-1:]])
    return np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)


def judge_geometry(points: Sequence[np.ndarray], direction: TurnDirection, rules: LivenessThresholds) -> Geometry:
    """Steps 1-3 of the decision from the tracked points alone."""
    yaws = [yaw_degrees(p) for p in points]
    smooth = _median3(yaws)  # one bad frame of the predictor must not make a turn
    sign = 1.0 if direction == TurnDirection.LEFT else -1.0
    rel = sign * (smooth - smooth[0])
    towards, away = float(rel.max()), float(-rel.min())
    turn = towards if towards >= away else -away
    frontal = int(np.argmin(np.abs(smooth)))
    # The plane test between the frontal frame and the frame whose shape differs most from it.
    fits = [plane_fit(points[frontal], p) for p in points]
    best: PlaneFit = max(fits, key=lambda f: f.deformation)
    failure: LivenessFailure | None = None
    if best.deformation >= rules.min_deformation and best.planarity >= rules.max_planarity:
        failure = LivenessFailure.PLANAR_MOTION
    elif away >= rules.min_turn_deg and away > towards:
        failure = LivenessFailure.WRONG_DIRECTION
    elif towards < rules.min_turn_deg:
        failure = LivenessFailure.NO_TURN
    return Geometry(failure, round(turn, 2), round(best.planarity, 4), best.deformation, frontal, yaws)


def _verdict(failure: LivenessFailure | None) -> LivenessVerdict:
    if failure is None:
        return LivenessVerdict.LIVE
    if failure == LivenessFailure.PLANAR_MOTION:
        return LivenessVerdict.PRESENTATION_ATTACK
    return LivenessVerdict.LIVENESS_FAILED


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(1.0 - a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


async def check_burst(pipeline: FacePipeline, frames: list[bytes], direction: TurnDirection) -> LivenessResponse:
    """Decode, detect once, track, judge, and embed what the decision needs."""
    rules = pipeline.settings.liveness
    images = [await pipeline.adecode(data) for data in frames]
    shapes = {im.rgb.shape for im in images}
    if len(shapes) > 1:
        raise FramesDiffer("the frames of a burst must all have the same size (one camera)")
    rgbs = [im.rgb for im in images]

    def respond(failure: LivenessFailure | None, geo: Geometry | None = None, face: object = None) -> LivenessResponse:
        return LivenessResponse(
            model=pipeline.descriptor,
            verdict=_verdict(failure),
            failure=failure,
            frames=len(frames),
            turn=geo.turn if geo else 0.0,
            planarity=geo.planarity if geo else 0.0,
            face=face,  # type: ignore[arg-type]
        )

    dets = await pipeline.adetect(rgbs[0])
    reasons = image_reasons(dets, pipeline.settings.gate)
    if QualityReason.NO_FACE in reasons:
        return respond(LivenessFailure.NO_FACE)
    if QualityReason.MULTIPLE_FACES in reasons:
        return respond(LivenessFailure.MULTIPLE_FACES)
    points = await asyncio.to_thread(track, pipeline.landmarks, rgbs, dets[0], pipeline.detector.detect)
    if points is None:
        return respond(LivenessFailure.FACE_LOST)
    geo = judge_geometry(points, direction, rules)
    if geo.failure is not None:
        return respond(geo.failure, geo)

    # Embed the frontal frame (the decision's face) and the burst's ends (the same person throughout?).
    picks = sorted({geo.frontal, 0, len(points) - 1})
    faces = [
        dets[0]
        if i == 0
        else Detection(box=mtcnn_box(points[i]), landmarks=five_points(points[i]), score=dets[0].score)
        for i in picks
    ]
    chips = [
        extract_chips(rgbs[i], [d], pipeline.model.geometry, pipeline.align)[0]
        for i, d in zip(picks, faces, strict=True)
    ]
    emb = await pipeline.aembed_chips(chips)
    at = {i: k for k, i in enumerate(picks)}
    front = emb[at[geo.frontal]]
    limit = rules.same_face_distance if rules.same_face_distance is not None else pipeline.descriptor.verify_threshold
    changed = max(_cosine(front, emb[at[0]]), _cosine(front, emb[at[len(points) - 1]])) > limit
    quality = assess_face(faces[at[geo.frontal]], chips[at[geo.frontal]], pipeline.rules(QualityProfile.GATE))
    face = face_message(faces[at[geo.frontal]], quality, front)
    return respond(LivenessFailure.FACE_CHANGED if changed else None, geo, face)
