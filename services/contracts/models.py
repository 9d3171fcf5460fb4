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


# Thresholds: `facegate calibrate --faces ../shared/faces/dev --model dlib-resnet-128,facenet-casia-512` (150
# photos, 28 identities, 342 genuine / 10,833 impostor pairs; README "Calibration"). 1:1 verify sits at FMR 1e-3
# (an impostor also needs the stolen ticket); 1:K identify at FMR 1e-4, since a stranger meets K attendees at once
# (FPIR ~ K x FMR). Rounded down, i.e. slightly stricter than measured. An event can override both.
FACENET_CASIA_512 = ModelDescriptor(
    id="facenet-casia-512",
    dim=512,
    input_size=160,
    preprocessing="MTCNN box + 25% margin resized to 160x160 RGB (its training crop), "
    "prewhiten (x-mean)/max(std, 1/sqrt(n))",
    verify_threshold=0.385,  # FMR 0.09%, TAR 73.1% on the dev set
    identify_threshold=0.329,  # FMR 0.01%, TAR 57.6%, FPIR 1.3% (K = 27 other identities)
)

DLIB_RESNET_128 = ModelDescriptor(
    id="dlib-resnet-128",
    dim=128,
    input_size=150,
    preprocessing="MTCNN landmarks, weighted similarity alignment to dlib's 150x150 chip "
    "(get_face_chip geometry, padding 0.25), RGB",
    verify_threshold=0.083,  # FMR 0.09%, TAR 95.9% on the dev set
    identify_threshold=0.070,  # FMR 0.01%, TAR 90.6%, FPIR 1.3% (K = 27 other identities)
)

# The default: better at every operating point on the dev set (EER 0.88% vs 3.57%) and 5x faster to embed.
DEFAULT_MODEL_ID = DLIB_RESNET_128.id

MODELS: dict[str, ModelDescriptor] = {m.id: m for m in (FACENET_CASIA_512, DLIB_RESNET_128)}


def get_model(model_id: str) -> ModelDescriptor | None:
    return MODELS.get(model_id)
