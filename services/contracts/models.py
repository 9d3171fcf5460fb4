"""Embedding model descriptors.

A template records the id of the model that produced it; a gallery (an event) is pinned to one model, and a
search never mixes models. Distances are cosine distances (1 - cos) between L2-normalised vectors, in [0, 2].
Thresholds are the calibrated operating points (see `facegate calibrate` and the README's calibration table).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelDescriptor(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    dim: int = Field(gt=0)
    metric: Literal["cosine"] = "cosine"
    input_size: int = Field(description="side of the square face chip the network takes, in pixels")
    preprocessing: str = Field(description="how a chip becomes the network's input")
    verify_threshold: float = Field(description="cosine distance at or under which a 1:1 check matches")
    identify_threshold: float = Field(description="cosine distance at or under which a 1:K search matches")


FACENET_CASIA_512 = ModelDescriptor(
    id="facenet-casia-512",
    dim=512,
    input_size=160,
    preprocessing="5-point similarity alignment to 160x160 RGB, prewhiten (x-mean)/max(std, 1/sqrt(n))",
    # Placeholders until calibration lands; replaced by the measured FMR=1e-3 operating point.
    verify_threshold=0.40,
    identify_threshold=0.35,
)

DLIB_RESNET_128 = ModelDescriptor(
    id="dlib-resnet-128",
    dim=128,
    input_size=150,
    preprocessing="5-point alignment to a 150x150 RGB chip (dlib get_face_chip), no normalisation",
    # Planned model, registered so galleries of 128-d templates can be created and benchmarked.
    # Placeholders: calibration against our photos is pending.
    verify_threshold=0.40,
    identify_threshold=0.35,
)

MODELS: dict[str, ModelDescriptor] = {m.id: m for m in (FACENET_CASIA_512, DLIB_RESNET_128)}


def get_model(model_id: str) -> ModelDescriptor | None:
    return MODELS.get(model_id)
