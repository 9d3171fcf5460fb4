"""Messages of the presentation-attack check (issue 17).

The gateway issues a random head-turn challenge and redeems it once; the embedder analyses the burst of frames
that answers it (POST /v1/liveness) and says whether a live head followed the challenge. Directions are the
subject's own: "left" means the person turns their head to their left, so in an unmirrored camera frame their
nose moves towards the image's right edge.

Entropy of the challenge (proposed, not implemented): left/right is one bit, so a recording of a real head turn
replayed blindly answers a random challenge half the time (bench/liveness.py measures it). A challenge with more
entropy that stays one pleasant movement: the kiosk shows the arrow at a server-chosen moment (one of 4 slots,
0.3-1.2 s into a capture that starts when the face is found) and sends the whole capture with `cue_frame`, the
index of the first frame shot after the arrow appeared; the embedder would require the head to stay still
(under min_turn_deg / 2) before `cue_frame` and to reach the turn within 0.2-0.8 s after it. Direction x slot
is 8 outcomes (a blind replay passes 1 in 8, and a replay timed by hand must start within ~0.3 s of the cue);
turn-and-return (hold or come back) would double it again. It would add `cue_frame: int | None` to the
request and a failure `turn_before_cue`.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from services.contracts.embedder import Face
from services.contracts.models import ModelDescriptor


class LivenessMode(StrEnum):
    OFF = "off"  # a single frame decides, as before
    CHALLENGE = "challenge"  # a server-issued head turn answered by a burst of frames


class TurnDirection(StrEnum):
    LEFT = "left"
    RIGHT = "right"


class LivenessVerdict(StrEnum):
    LIVE = "live"
    PRESENTATION_ATTACK = "presentation_attack"  # the face moved as a plane (print, screen)
    LIVENESS_FAILED = "liveness_failed"  # the challenge was not followed (see LivenessFailure)


class LivenessFailure(StrEnum):
    TOO_FEW_FRAMES = "too_few_frames"
    NO_FACE = "no_face"
    MULTIPLE_FACES = "multiple_faces"
    FACE_LOST = "face_lost"  # the tracked face left the frame during the burst
    FACE_CHANGED = "face_changed"  # the first and last faces are not the same person
    NO_TURN = "no_turn"  # the head did not turn far enough
    WRONG_DIRECTION = "wrong_direction"
    PLANAR_MOTION = "planar_motion"  # one homography explains every landmark: a flat picture


BURST_ID_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"  # a streamed burst's id (the gateway's hash of the challenge)


class BurstProgress(BaseModel):
    """The answer to a streamed part of a burst: the frames received so far (the verdict comes at its end)."""

    frames: int


class LivenessResponse(BaseModel):
    model: ModelDescriptor
    verdict: LivenessVerdict
    failure: LivenessFailure | None = Field(description="why the verdict is not live; null when live")
    frames: int = Field(description="frames analysed")
    turn: float = Field(description="signed head turn over the burst in degrees; positive is the asked direction")
    planarity: float = Field(
        description="how well one homography explains the dense landmarks' motion (higher: flatter); the "
        "threshold is the embedder's"
    )
    face: Face | None = Field(
        description="the most frontal frame's face with its embedding (gate profile): the one the gateway decides on"
    )
    # Added by the embedder side (issue 17): the FACE_CHANGED measure, for the access log and for tuning.
    face_distance: float | None = Field(
        default=None,
        description="the larger cosine distance of the first and the last frame's face from the frontal one; "
        "null when nothing was embedded",
    )
