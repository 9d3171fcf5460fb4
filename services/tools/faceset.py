"""A labelled folder of faces (`<identity>/*.jpg`) embedded once through the real pipeline, cached on disk.

Calibration, its held-back check and the benchmarks all start from the same thing: for every photo, what the
detector saw (how many faces, the second face's size relative to the first), how the enrol and gate quality
profiles judged it, and the embedding of the dominant (largest) face, which is the face a gate decides on.
Detection runs once per photo; both profiles reuse it. The cache key covers the model, the pipeline settings
and every file's name and size, so a change to detection, alignment or the model re-embeds.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
CACHE_VERSION = 1


def load_labelled(folder: Path) -> list[tuple[str, Path]]:
    items = []
    for ident in sorted(p for p in folder.iterdir() if p.is_dir()):
        for img in sorted(ident.iterdir()):
            if img.suffix.lower() in IMAGE_SUFFIXES:
                items.append((ident.name, img))
    return items


@dataclass
class FaceSet:
    """One row per photo. `embeddings[i]` is NaN where the photo has no face."""

    model_id: str
    paths: list[str]  # relative to the folder
    labels: np.ndarray  # [N] str
    embeddings: np.ndarray  # [N, dim] float32
    n_faces: np.ndarray  # [N] int, faces detected
    second_ratio: np.ndarray  # [N] float, second face's size / largest's (0 with one face)
    enrol_reasons: list[list[str]]  # the dominant face's enrol-profile codes (image-level codes excluded)
    gate_reasons: list[list[str]]

    @property
    def has_face(self) -> np.ndarray:
        return self.n_faces > 0

    def subset(self, mask: np.ndarray) -> FaceSet:
        idx = np.flatnonzero(mask)
        return FaceSet(
            model_id=self.model_id,
            paths=[self.paths[i] for i in idx],
            labels=self.labels[idx],
            embeddings=self.embeddings[idx],
            n_faces=self.n_faces[idx],
            second_ratio=self.second_ratio[idx],
            enrol_reasons=[self.enrol_reasons[i] for i in idx],
            gate_reasons=[self.gate_reasons[i] for i in idx],
        )


def _cache_key(model_id: str, settings_json: str, items: list[tuple[str, Path]], root: Path, variant: str = "") -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}|{model_id}|{settings_json}{variant}".encode())
    for label, path in items:
        h.update(f"{label}/{path.relative_to(root)}:{path.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def embed_faceset(
    folder: Path,
    model_id: str,
    cache_dir: Path | None = None,
    *,
    pipeline: Any = None,
    progress: bool = True,
    flip: bool = False,
) -> FaceSet:
    """Embed every photo under `folder` with `model_id` (or read the cached result); `pipeline`: a loaded
    FacePipeline of that model to reuse. `flip=True`: the embedding of the mirrored chip instead (same photos,
    same detection and chip, flipped left-right; cached separately), for flip test-time augmentation."""
    from services.contracts.embedder import QualityProfile, QualityReason
    from services.embedder.settings import EmbedderSettings

    settings = EmbedderSettings(model_id=model_id)
    items = load_labelled(folder)
    if not items:
        raise FileNotFoundError(f"no images under {folder}/<identity>/")
    variant = "|flip" if flip else ""  # the unflipped key is unchanged, so existing caches stay valid
    key = _cache_key(model_id, settings.model_dump_json(), items, folder, variant)
    name = f"faceset-{folder.name}-{model_id}{'-flip' if flip else ''}-{key}.npz"
    cache = cache_dir / name if cache_dir else None
    if cache is not None and cache.exists():
        return _read(cache)

    from services.embedder.pipeline import FacePipeline

    if pipeline is None:
        pipeline = FacePipeline(settings)
        pipeline.load()
    elif pipeline.descriptor.id != model_id:
        raise ValueError(f"pipeline serves {pipeline.descriptor.id}, not {model_id}")
    image_level = {QualityReason.NO_FACE, QualityReason.MULTIPLE_FACES}
    dim = pipeline.model.descriptor.dim
    embs = np.full((len(items), dim), np.nan, dtype=np.float32)
    n_faces = np.zeros(len(items), dtype=np.int32)
    ratio = np.zeros(len(items), dtype=np.float32)
    enrol: list[list[str]] = []
    gate: list[list[str]] = []
    start = time.perf_counter()
    for i, (_, path) in enumerate(items):
        image = pipeline.decode(path.read_bytes())
        dets = pipeline.detector.detect(image.rgb, None)
        n_faces[i] = len(dets)
        if len(dets) > 1:
            ratio[i] = dets[1].size / dets[0].size
        if dets:
            a_enrol = pipeline.analyse(image, dets[:1], QualityProfile.ENROL, 1)
            a_gate = pipeline.analyse(image, dets[:1], QualityProfile.GATE, 1)
            chips = a_gate.chips[:, :, ::-1] if flip else a_gate.chips
            embs[i] = pipeline.model.embed(np.ascontiguousarray(chips))[0]
            enrol.append([r.value for r in a_enrol.reasons if r not in image_level])
            gate.append([r.value for r in a_gate.reasons if r not in image_level])
        else:
            enrol.append([])
            gate.append([])
        if progress and (i + 1) % 250 == 0:
            rate = (i + 1) / (time.perf_counter() - start)
            print(f"  {model_id}{' (flipped)' if flip else ''}: {i + 1}/{len(items)} photos, {rate:.1f}/s", flush=True)
    fs = FaceSet(
        model_id=model_id,
        paths=[str(p.relative_to(folder)) for _, p in items],
        labels=np.asarray([label for label, _ in items]),
        embeddings=embs,
        n_faces=n_faces,
        second_ratio=ratio,
        enrol_reasons=enrol,
        gate_reasons=gate,
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        _write(fs, cache)
    return fs


def _write(fs: FaceSet, path: Path) -> None:
    meta = json.dumps({"model_id": fs.model_id, "paths": fs.paths, "enrol": fs.enrol_reasons, "gate": fs.gate_reasons})
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        meta=np.asarray(meta),
        labels=fs.labels,
        embeddings=fs.embeddings,
        n_faces=fs.n_faces,
        ratio=fs.second_ratio,
    )
    tmp.replace(path)


def _read(path: Path) -> FaceSet:
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        return FaceSet(
            model_id=meta["model_id"],
            paths=meta["paths"],
            labels=z["labels"],
            embeddings=z["embeddings"],
            n_faces=z["n_faces"],
            second_ratio=z["ratio"],
            enrol_reasons=meta["enrol"],
            gate_reasons=meta["gate"],
        )
