"""What a face-embedding model is to the pipeline: a descriptor, a chip geometry and a batch runtime."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import numpy as np

from services.contracts.models import ModelDescriptor

AlignMode = Literal["landmarks", "crop"]


@dataclass(frozen=True)
class ChipGeometry:
    """Where a face sits in the model's input chip.

    `template` holds the five landmarks (left eye, right eye, nose, mouth left, mouth right; image left/right)
    in chip pixels for landmark alignment; `crop_margin` is the total margin, as a fraction of the detector
    box, of the box-and-margin crop the model was trained on. `align` is the chip mode measured best for this
    model (the setting `align` overrides it); `weights` weigh the five points in the similarity fit.
    """

    size: int
    template: np.ndarray  # [5, 2] float32, chip pixels
    crop_margin: float
    align: AlignMode = "landmarks"
    weights: np.ndarray | None = None  # [5], relative; None = equal


class FaceModel(ABC):
    """A loaded embedding model. `embed` is blocking and thread-compatible but not re-entrant."""

    descriptor: ModelDescriptor
    geometry: ChipGeometry

    @abstractmethod
    def load(self) -> None:
        """Load weights; may take seconds."""

    @abstractmethod
    def preprocess(self, chips: np.ndarray) -> np.ndarray:
        """uint8 RGB chips [N, S, S, 3] -> the network's input."""

    @abstractmethod
    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Network input -> raw embeddings [N, dim]."""

    @property
    def device(self) -> str:
        return "cpu"

    def preprocessing_for(self, align: str) -> str:
        """The descriptor's `preprocessing` text for a chip mode."""
        return self.descriptor.preprocessing

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """uint8 RGB chips [N, S, S, 3] -> L2-normalised float32 embeddings [N, dim]."""
        size = self.geometry.size
        if chips.ndim != 4 or chips.shape[1:] != (size, size, 3):
            raise ValueError(f"expected chips [N, {size}, {size}, 3], got {chips.shape}")
        if len(chips) == 0:
            return np.zeros((0, self.descriptor.dim), dtype=np.float32)
        out = self.forward(self.preprocess(chips)).astype(np.float32, copy=False)
        # The graph normalises already; doing it again costs nothing and holds for any future model.
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def warm_up(self, batch_sizes: tuple[int, ...] = (1, 8)) -> None:
        """Run each batch size once so the first requests do not pay graph optimisation (seconds on TF)."""
        size = self.geometry.size
        rng = np.random.default_rng(0)
        for n in batch_sizes:
            self.embed(rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8))
