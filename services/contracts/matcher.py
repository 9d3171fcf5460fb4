"""Messages of the matcher service: per-event galleries of face templates."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class GalleryCreate(BaseModel):
    model_id: str


class GalleryResponse(BaseModel):
    event_id: uuid.UUID
    model_id: str
    dim: int
    templates: int
    attendees: int
    created_at: datetime
    search_mode: Literal["exact", "hnsw"] = Field(description="what a search of this gallery uses now")


class TemplateIn(BaseModel):
    attendee_id: uuid.UUID
    model_id: str
    embedding: list[float]
    quality: float | None = Field(default=None, description="optional quality score kept with the template")


class TemplatesCreate(BaseModel):
    templates: list[TemplateIn] = Field(min_length=1, max_length=1000)


class TemplatesCreated(BaseModel):
    ids: list[uuid.UUID] = Field(description="the new photo templates, in request order")
    attendee_templates: dict[uuid.UUID, int] = Field(
        default_factory=dict,
        description="each attendee of the batch: templates now held, their mean template included (what 1:K counts)",
    )


class TemplateOut(BaseModel):
    id: uuid.UUID
    attendee_id: uuid.UUID
    model_id: str
    embedding: list[float]
    quality: float | None
    created_at: datetime
    kind: Literal["photo", "mean"] = Field(
        "photo", description="a photo's template, or the matcher's normalised mean of the attendee's photo templates"
    )


class AttendeeTemplates(BaseModel):
    attendee_id: uuid.UUID
    model_id: str
    templates: list[TemplateOut]


class Deleted(BaseModel):
    deleted: int


class SearchRequest(BaseModel):
    model_id: str
    embedding: list[float]
    k: int = Field(default=5, ge=1, le=100)


class SearchMatch(BaseModel):
    attendee_id: uuid.UUID
    template_id: uuid.UUID
    distance: float = Field(description="cosine distance of the attendee's nearest template")


class SearchResponse(BaseModel):
    matches: list[SearchMatch] = Field(description="top-k attendees, nearest first")
    mode: Literal["exact", "hnsw", "resident"] = Field(
        description="exact scan, pgvector HNSW, or the matcher's in-memory copy of the gallery at its current version"
    )
    templates: int = Field(0, description="templates in the gallery at the searched version (1:K thresholds use it)")
    attendees: int = Field(0, description="attendees with templates in the gallery at the searched version")


class DistanceRequest(BaseModel):
    model_id: str
    embedding: list[float]


class DistanceResponse(BaseModel):
    attendee_id: uuid.UUID
    distance: float = Field(description="min cosine distance over the attendee's templates")
    template_id: uuid.UUID
    templates: int
