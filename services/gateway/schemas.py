"""API schemas of the gateway (public request/response bodies). Database models live in `tables.py`."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from services.contracts.calibration import DEFAULT_TARGET_FMR, DEFAULT_TARGET_FPIR
from services.contracts.embedder import Box, Landmarks
from services.contracts.liveness import LivenessMode, TurnDirection

# C0/C1 control characters (NUL, ESC, newline, ...): Postgres cannot store NUL at all (a 500), and the others
# forge log lines, terminal output and CSV exports. No name or ticket code needs them. Also refused: bidi
# overrides/isolates/marks and zero-width or invisible characters (issue 14): they make a name on the console read
# as another, or two identical-looking codes differ (services/gateway/text.py).
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]")


def no_control_chars(value: str) -> str:
    if CONTROL_CHARS.search(value):
        raise ValueError("must not contain control characters")
    return value


PlainText = Annotated[str, AfterValidator(no_control_chars)]

_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def iso_only(value: Any) -> Any:
    """Refuse numbers where the schema says an ISO 8601 date-time: pydantic would read 0 or "0.5" as seconds since
    1970, which no client means (schemathesis found `starts_at: 0` and `?since=0.5` accepted)."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("expected an ISO 8601 date-time, not a number")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(iso_only)]


class Role(StrEnum):
    ADMIN = "admin"
    ORGANISER = "organiser"
    GATE = "gate"


class EventMode(StrEnum):
    VERIFY = "verify"
    IDENTIFY = "identify"
    BOTH = "both"


class Decision(StrEnum):
    ADMIT = "admit"
    DENY = "deny"
    UNKNOWN = "unknown"


class Reason(StrEnum):
    UNKNOWN_TICKET = "unknown_ticket"
    REVOKED = "revoked"
    ALREADY_ENTERED = "already_entered"
    NO_FACE = "no_face"
    MULTIPLE_FACES = "multiple_faces"
    LOW_QUALITY = "low_quality"
    FACE_MISMATCH = "face_mismatch"
    NO_MATCH = "no_match"
    AMBIGUOUS = "ambiguous"
    OUTSIDE_EVENT_WINDOW = "outside_event_window"
    PRESENTATION_ATTACK = "presentation_attack"  # the burst moved as a flat picture (print, screen)
    LIVENESS_FAILED = "liveness_failed"  # the challenge was not answered: late, reused, wrong turn, face changed
    MATCH = "match"


# --- keys ---------------------------------------------------------------------------------------------------


class KeyCreate(BaseModel):
    name: PlainText = Field(min_length=1, max_length=200)
    role: Role
    event_id: uuid.UUID | None = Field(default=None, description="required for (and only for) gate keys")
    same_tenant_as: uuid.UUID | None = Field(
        default=None,
        description="admin only, organiser keys: join the tenant (and events) of this organiser key; for rotation",
    )

    @model_validator(mode="after")
    def _gate_has_event(self) -> KeyCreate:
        if (self.role == Role.GATE) != (self.event_id is not None):
            raise ValueError("event_id is required for gate keys and not allowed for other roles")
        if self.same_tenant_as is not None and self.role != Role.ORGANISER:
            raise ValueError("same_tenant_as only applies to organiser keys")
        return self


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str
    role: Role
    tenant_id: uuid.UUID | None
    event_id: uuid.UUID | None
    created_by: uuid.UUID | None
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    token: str = Field(description="the bearer token; shown once, only its hash is stored")


# --- events ---------------------------------------------------------------------------------------------------


# Targets an organiser may ask for: laxer than these is not access control any more; stricter than what the
# calibration can estimate (its tail model is fitted down to ~1e-7 per comparison) is not a promise it can keep.
TargetFpir = Annotated[float, Field(gt=0, le=0.05, description="1:K: share of strangers admitted as someone")]
TargetFmr = Annotated[
    float, Field(ge=1e-7, le=1e-2, description="1:1: share of impostors with a stolen ticket admitted")
]
Distance = Annotated[float, Field(gt=0, le=2)]
Margin = Annotated[float, Field(ge=0, le=2)]


class EventCreate(BaseModel):
    name: PlainText = Field(min_length=1, max_length=200)
    starts_at: IsoDateTime | None = Field(default=None, description="gates deny `outside_event_window` before it")
    ends_at: IsoDateTime | None = Field(default=None, description="gates deny `outside_event_window` after it")
    mode: EventMode = EventMode.BOTH
    allow_reentry: bool = False
    model_id: str | None = Field(default=None, description="default: the gateway's default model")
    target_fpir: TargetFpir = DEFAULT_TARGET_FPIR
    target_fmr: TargetFmr = DEFAULT_TARGET_FMR
    verify_threshold: Distance | None = Field(
        default=None, description="expert override of the derived 1:1 distance (bounded: see force_thresholds)"
    )
    identify_threshold: Distance | None = Field(
        default=None, description="expert override of the derived 1:K distance (it then no longer follows K)"
    )
    identify_margin: Margin | None = Field(
        default=None, description="null: the model's calibrated margin; the nearest must beat the second by more"
    )
    force_thresholds: bool = Field(
        default=False, description="accept an override whose calibrated FMR is above 1e-2 (logged)"
    )
    liveness: LivenessMode = Field(
        default=LivenessMode.OFF,
        description="`challenge`: gates must answer a server-issued head turn with a burst of frames "
        "(POST /v1/gate/challenge, then /v1/gate/identify/burst or /verify/burst); a single frame is refused",
    )

    @model_validator(mode="after")
    def _ordered(self) -> EventCreate:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class EventUpdate(BaseModel):
    """Fields to change; absent fields stay. `null` for a threshold goes back to the one derived from the targets,
    for the margin to the calibrated one. The model is pinned for the event's life (its templates were made by it)."""

    name: PlainText | None = Field(default=None, min_length=1, max_length=200)
    starts_at: IsoDateTime | None = None
    ends_at: IsoDateTime | None = None
    mode: EventMode | None = None
    allow_reentry: bool | None = None
    target_fpir: TargetFpir | None = None
    target_fmr: TargetFmr | None = None
    verify_threshold: Distance | None = None
    identify_threshold: Distance | None = None
    identify_margin: Margin | None = None
    force_thresholds: bool = False
    liveness: LivenessMode | None = None


class ExpectedRates(BaseModel):
    """What the effective thresholds are expected to do at the event's current size (from the calibration)."""

    attendees: int
    templates: int
    identify_fpir: float = Field(description="expected share of strangers admitted as someone (1:K)")
    identify_fpir_interval: tuple[float, float] = Field(description="its 90% interval (bootstrap of the fit)")
    identify_fnir: float = Field(description="expected share of attendees not recognised in 1:K (they use tickets)")
    verify_fmr: float = Field(description="expected share of impostors with a stolen ticket admitted (1:1)")
    verify_fnmr: float = Field(description="expected share of genuine ticket holders refused (1:1)")
    summary: str


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    starts_at: datetime | None
    ends_at: datetime | None
    mode: EventMode
    allow_reentry: bool
    model_id: str
    target_fpir: float
    target_fmr: float
    verify_threshold: float = Field(description="effective 1:1 distance: derived from target_fmr, or the override")
    identify_threshold: float = Field(
        description="effective 1:K distance at the current gallery size: derived from target_fpir, or the override"
    )
    identify_margin: float = Field(description="effective margin (the calibrated one unless overridden)")
    threshold_overridden: bool
    margin_overridden: bool
    liveness: LivenessMode
    expected: ExpectedRates
    created_at: datetime


class EventList(BaseModel):
    items: list[EventOut]


class Erased(BaseModel):
    erased: bool = True
    attendees: int = 0
    log_rows: int = 0
    templates: int = 0


# --- attendees --------------------------------------------------------------------------------------------------


class AttendeeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    event_id: uuid.UUID
    name: str
    ticket_code: str
    external_ref: str | None
    templates: int
    created_at: datetime
    revoked_at: datetime | None
    entered_at: datetime | None
    last_entry_at: datetime | None
    entries: int


class AttendeeList(BaseModel):
    items: list[AttendeeOut]
    next_offset: int | None


class FaceFound(BaseModel):
    """Where the embedder found a face on a photo, so a client can draw it over the photo it sent."""

    box: Box
    landmarks: Landmarks
    score: float
    reasons: list[str] = Field(description="this face's quality reasons under the enrol profile")


class PhotoReport(BaseModel):
    index: int
    filename: str | None
    passed: bool
    reasons: list[str]
    faces: int
    image_width: int | None = Field(default=None, description="pixel size the boxes refer to (EXIF upright)")
    image_height: int | None = None
    detections: list[FaceFound] = Field(default=[], description="faces found, largest first")


class Enrolled(BaseModel):
    attendee: AttendeeOut
    templates_added: int
    photos: list[PhotoReport]


# --- gate -------------------------------------------------------------------------------------------------------


class GateResult(BaseModel):
    """What a gate device learns: the decision and its reason, and who on admit. Distances, thresholds and the
    attendee a denied face was compared with stay in the access log, for organisers: a gate key must not become a
    hill-climbing or membership oracle."""

    decision: Decision
    reason: Reason
    attendee_id: uuid.UUID | None = Field(default=None, description="on admit only")
    attendee_name: str | None = Field(default=None, description="display name, on admit only")
    model_id: str
    request_id: str | None
    latency_ms: float
    mode: str
    quality_reasons: list[str] = []


class GateEvent(BaseModel):
    """What a gate device needs to know about its event to pick the protocol (the kiosk asks on start)."""

    mode: EventMode
    liveness: LivenessMode


class FrameCount(BaseModel):
    min: int
    max: int


class Challenge(BaseModel):
    """A head-turn challenge: turn as asked, capture `frames` frames within `max_duration_ms`, and post them with
    `nonce` before `expires_at`. The nonce is good for one burst, from this gate key, for its event."""

    nonce: str
    direction: TurnDirection = Field(
        description="the person's own left or right (in an unmirrored camera frame, their nose moves towards the "
        "opposite edge of the image)"
    )
    expires_at: datetime
    frames: FrameCount
    max_duration_ms: int = Field(description="the burst should span at most this long, first frame to last")


class StreamedFrames(BaseModel):
    """Frames of a burst sent ahead of its end (`POST /v1/gate/burst/frames`), received and being analysed."""

    frames: int = Field(
        description="frames of this burst streamed so far: the `offset` of its next part and the "
        "`streamed` of the decision that ends it"
    )


# --- access log -------------------------------------------------------------------------------------------------


class LogEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    event_id: uuid.UUID
    gate_key_id: uuid.UUID | None
    mode: str
    ticket_code: str | None
    attendee_id: uuid.UUID | None
    decision: Decision
    reason: str | None
    distance: float | None
    threshold: float | None
    model_id: str
    latency_ms: float
    request_id: str | None
    liveness: str | None = Field(
        default=None,
        description="bursts only: `live`, or why not (the embedder's failure code, or `challenge_unknown`, "
        "`challenge_used`, `challenge_expired`); null for a single frame",
    )


class LogPage(BaseModel):
    items: list[LogEntry]
    next_cursor: str | None = Field(description="pass as `cursor` to get the next (older) page")


class LiveCounts(BaseModel):
    event_id: uuid.UUID
    since: datetime | None
    admitted: int
    denied: int
    denied_by_reason: dict[str, int]
    unknown: int
    unknown_by_reason: dict[str, int]
    attendees: int
    entered: int


# --- bulk import ------------------------------------------------------------------------------------------------


class ImportJobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    event_id: uuid.UUID
    status: str = Field(description="queued | running | done | failed")
    total: int
    succeeded: int
    failed: int
    results: list[dict[str, Any]] = Field(description="one entry per finished row: attendee_id, or code + detail")
    error: str | None
    created_at: datetime
    finished_at: datetime | None
