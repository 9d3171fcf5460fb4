"""Model registry: model id -> how to build it. A new model is one module and one entry here.

The descriptor (dim, input size, thresholds) lives in services.contracts.models; the entry adds the chip
geometry/preprocessing and runtime (the FaceModel subclass): FaceNet (512-d, box+margin crops) and our
TensorFlow port of dlib's ResNet (128-d, 150x150 chips aligned to its own landmark template).
"""

from __future__ import annotations

from collections.abc import Callable

from services.contracts.models import ModelDescriptor
from services.embedder.models.base import ChipGeometry, FaceModel
from services.embedder.models.dlib_resnet import DlibResNetModel
from services.embedder.models.facenet import FaceNetModel

ModelFactory = Callable[..., FaceModel]

REGISTRY: dict[str, type[FaceModel]] = {
    FaceNetModel.descriptor.id: FaceNetModel,
    DlibResNetModel.descriptor.id: DlibResNetModel,
}


def available() -> list[ModelDescriptor]:
    return [cls.descriptor for cls in REGISTRY.values()]


def create_model(model_id: str, *, device: str = "auto") -> FaceModel:
    try:
        cls = REGISTRY[model_id]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"unknown or not yet implemented model {model_id!r} (available: {known})") from None
    return cls(device=device)  # type: ignore[call-arg]


__all__ = ["REGISTRY", "ChipGeometry", "FaceModel", "available", "create_model"]
