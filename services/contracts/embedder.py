"""Messages of the embedder service (POST /v1/embed, GET /v1/model)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from services.contracts.models import ModelDescriptor


class QualityProfile(StrEnum):
    ENROL = "enrol"  # strict: a template must be good for years of matching
    GATE = "gate"  # lax: a gate frame only has to be matchable now


class QualityReason(StrEnum):
    NO_FACE = "no_face"
    MULTIPLE_FACES = "multiple_faces"
    FACE_TOO_SMALL = "face_too_small"
    LOW_CONFIDENCE = "low_confidence"
    BLURRED = "blurred"
    EXTREME_POSE = "extreme_pose"
    TOO_DARK = "too_dark"
    TOO_BRIGHT = "too_bright"


class Box(BaseModel):
    x: int
    y: int
    width: int
    height: int


class Landmarks(BaseModel):
    """MTCNN's five points in original-image pixels. Left/right as MTCNN names them (image left/right)."""

    left_eye: tuple[float, float]
    right_eye: tuple[float, float]
    nose: tuple[float, float]
    mouth_left: tuple[float, float]
    mouth_right: tuple[float, float]


class FaceQuality(BaseModel):
    passed: bool = Field(description="true when no reason applies under the requested profile")
    reasons: list[QualityReason]
    sharpness: float = Field(description="variance of the Laplacian of the aligned chip")
    brightness: float = Field(description="mean luma of the aligned chip, 0-255")
    inter_eye_px: float = Field(description="distance between the eye centres in original pixels")
    yaw: float = Field(description="nose offset from the eye midline, as a fraction of the eye distance")
    pitch: float = Field(description="eyes-to-nose over eyes-to-mouth ratio; about 0.5 for a frontal face")


class Face(BaseModel):
    box: Box
    landmarks: Landmarks
    score: float = Field(description="detector confidence, 0-1")
    quality: FaceQuality
    embedding: list[float] = Field(description="L2-normalised embedding, length = model.dim")


class ImageInfo(BaseModel):
    width: int
    height: int
    orientation_applied: bool = Field(description="true when an EXIF orientation was applied before detection")


class EmbedResponse(BaseModel):
    model: ModelDescriptor
    image: ImageInfo
    profile: QualityProfile
    faces: list[Face] = Field(description="largest face (box area) first")
    passed: bool = Field(description="exactly one face and it passes the profile")
    reasons: list[QualityReason] = Field(description="why the image does not pass: image- and face-level codes")
