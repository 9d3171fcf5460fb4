"""Face chips: 5-point similarity alignment to the model's template, or FaceNet's box-plus-margin crop."""

from __future__ import annotations

import numpy as np

from services.embedder.detector import Detection
from services.embedder.geometry import crop_transform, similarity_transform, warp_chip
from services.embedder.models.base import AlignMode, ChipGeometry

__all__ = ["AlignMode", "crop_transform", "extract_chips", "similarity_transform", "warp_chip"]


def chip_transform(det: Detection, geometry: ChipGeometry, mode: AlignMode) -> np.ndarray:
    if mode == "landmarks":
        return similarity_transform(det.landmarks, geometry.template, geometry.weights)
    return crop_transform(det.box, geometry.size, geometry.crop_margin)


def extract_chip(rgb: np.ndarray, det: Detection, geometry: ChipGeometry, mode: AlignMode) -> np.ndarray:
    """One size x size uint8 RGB chip for `det`."""
    return warp_chip(rgb, chip_transform(det, geometry, mode), geometry.size)


def extract_chips(rgb: np.ndarray, dets: list[Detection], geometry: ChipGeometry, mode: AlignMode) -> np.ndarray:
    size = geometry.size
    if not dets:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.stack([extract_chip(rgb, d, geometry, mode) for d in dets])
