"""Messages of the presentation-attack check (issue 17).

The gateway issues a random head-turn challenge and redeems it once; the embedder analyses the burst of frames
that answers it (POST /v1/liveness) and says whether a live head followed the challenge. Directions are the
subject's own: "left" means the person turns their head to their left, so in an unmirrored camera frame their
nose moves towards the image's right edge.
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
