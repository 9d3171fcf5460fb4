"""An adaptation head: a small projection applied to a frozen model's embeddings (trained by `facegate train`).

The artefact is an `.npz` of plain arrays (never a pickle: `np.load(allow_pickle=False)`): a JSON header
(format, version, model id, dimensions, what it was trained on and how) and the residual projection
y = normalise(x + x W + b), which is the identity when W and b are zero. Loading refuses anything that does
not match: another format or version, another model, wrong shapes, non-finite weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HEAD_FORMAT = "facegate-embedding-head"
HEAD_VERSION = 1


class BadHead(ValueError):
    """The file is not a head this code can apply to this model."""


@dataclass
class EmbeddingHead:
    model_id: str
    kernel: np.ndarray  # [dim_in, dim_out]
    bias: np.ndarray  # [dim_out]
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """Eight hex digits of the weights' hash: which head produced an embedding."""
        h = hashlib.sha256(self.kernel.astype(np.float32).tobytes() + self.bias.astype(np.float32).tobytes())
        return h.hexdigest()[:8]

    @property
    def dim_in(self) -> int:
        return int(self.kernel.shape[0])

    @property
    def dim_out(self) -> int:
        return int(self.kernel.shape[1])

    def apply(self, e: np.ndarray) -> np.ndarray:
        """[N, dim_in] embeddings -> [N, dim_out] L2-normalised."""
        e = np.asarray(e, dtype=np.float32)
        if e.ndim != 2 or e.shape[1] != self.dim_in:
            raise ValueError(f"head for {self.model_id} takes [N, {self.dim_in}], got {e.shape}")
        y = e @ self.kernel + self.bias
        if self.dim_in == self.dim_out:
            y = y + e  # residual: the identity at W = 0, b = 0
        return (y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def save(self, path: Path) -> None:
        header = {
            **self.header,
            "format": HEAD_FORMAT,
            "version": HEAD_VERSION,
            "model_id": self.model_id,
            "dim_in": self.dim_in,
            "dim_out": self.dim_out,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            header=np.asarray(json.dumps(header, sort_keys=True)),
            kernel=self.kernel.astype(np.float32),
            bias=self.bias.astype(np.float32),
        )
        tmp.replace(path)


def load_head(path: Path, model_id: str | None = None) -> EmbeddingHead:
    """Read and check a head artefact; `model_id`: the model it must belong to."""
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            kernel, bias = np.asarray(z["kernel"]), np.asarray(z["bias"])
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
        raise BadHead(f"{path}: not a readable head artefact ({type(exc).__name__}: {exc})") from exc
    if not isinstance(header, dict) or header.get("format") != HEAD_FORMAT:
        raise BadHead(f"{path}: not a {HEAD_FORMAT} file")
    if header.get("version") != HEAD_VERSION:
        raise BadHead(f"{path}: head version {header.get('version')!r}, this code reads {HEAD_VERSION}")
    if model_id is not None and header.get("model_id") != model_id:
        raise BadHead(f"{path}: head for {header.get('model_id')!r}, not {model_id!r}")
    d_in, d_out = header.get("dim_in"), header.get("dim_out")
    if kernel.ndim != 2 or kernel.shape != (d_in, d_out) or bias.shape != (d_out,):
        raise BadHead(f"{path}: weights {kernel.shape}/{bias.shape} do not match the header's {d_in}x{d_out}")
    if (
        kernel.dtype.kind != "f"
        or bias.dtype.kind != "f"
        or not (np.isfinite(kernel).all() and np.isfinite(bias).all())
    ):
        raise BadHead(f"{path}: weights are not finite floats")
    return EmbeddingHead(str(header["model_id"]), kernel.astype(np.float32), bias.astype(np.float32), header)
