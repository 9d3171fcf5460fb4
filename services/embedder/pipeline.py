"""The full embedder pipeline: bytes -> decode -> detect -> align -> quality -> embed -> EmbedResponse.

`embed_image` runs it synchronously in the calling thread (calibration, benchmarks, scripts);
`aembed_image` runs the same steps for the API, with detection and embedding going through micro-batchers
shared by all concurrent requests.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from services.common.errors import ServiceUnavailable
from services.contracts.embedder import (
    Box,
    EmbedResponse,
    Face,
    FaceQuality,
    ImageInfo,
    Landmarks,
    QualityProfile,
    QualityReason,
)
from services.embedder import metrics
from services.embedder.align import AlignMode, extract_chips
from services.embedder.batching import MicroBatcher
from services.embedder.detector import LANDMARK_KEYS, Detection, DetectJob, FaceDetector
from services.embedder.imaging import DecodedImage, decode_image
from services.embedder.landmarks import ShapePredictor
from services.embedder.models import FaceModel, create_model
from services.embedder.models.head import EmbeddingHead, load_head
from services.embedder.models.tf_runtime import configure_tensorflow, pick_device
from services.embedder.quality import assess_face, image_reasons
from services.embedder.settings import EmbedderSettings, QualityThresholds

log = logging.getLogger("facegate.embedder.pipeline")


@dataclass
class _Analysis:
    """Everything but the embeddings: what to embed and how each face scored."""

    image: DecodedImage
    faces: list[Detection]  # the ones returned (largest first, at most max_faces)
    chips: np.ndarray
    qualities: list[FaceQuality]
    reasons: list[QualityReason]
    passed: bool


class FacePipeline:
    def __init__(self, settings: EmbedderSettings | None = None) -> None:
        self.settings = settings or EmbedderSettings()
        s = self.settings
        self.model: FaceModel = create_model(s.model_id, device=s.device)
        self.align: AlignMode = s.align or self.model.geometry.align
        # An adaptation head (`facegate train`), off unless configured: its embeddings are another space, so the
        # descriptor's id names the head and no template of the plain model is ever compared with them.
        self.head: EmbeddingHead | None = load_head(Path(s.head_path), s.model_id) if s.head_path else None
        update: dict[str, object] = {"preprocessing": self.model.preprocessing_for(self.align)}
        if self.head is not None:
            update |= {"id": f"{s.model_id}+head-{self.head.tag}", "dim": self.head.dim_out}
        # What clients see: the model's descriptor, with the chip mode this pipeline really uses.
        self.descriptor = self.model.descriptor.model_copy(update=update)
        self.detector = FaceDetector(
            max_side=s.detect_max_side,
            max_side_small=s.detect_max_side_small,
            face_px=s.detect_face_px,
            min_face_size=s.min_face_size,
            batch_pixels=s.detect_batch_pixels,
        )
        self.state = "created"  # created | loading | warming | ready | failed: <why>
        self._lock = threading.Lock()  # the sync path runs TF from the caller's thread, one image at a time
        # bounds the memory a burst of large images can take at once (each decode is itself budgeted)
        self._decode_slots = asyncio.Semaphore(s.max_concurrent_decodes)
        self.landmarks = ShapePredictor()  # dlib's 68 points, for the liveness burst check
        self._detect_batcher: MicroBatcher[DetectJob, list[Detection]] | None = None
        self._embed_batcher: MicroBatcher[np.ndarray, np.ndarray] | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    # -- lifecycle ---------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load and warm both networks (blocking; ~10 s on CPU). Idempotent."""
        if self.ready:
            return
        s = self.settings
        try:
            self.state = "loading"
            t0 = time.perf_counter()
            gpus = configure_tensorflow(intra_op_threads=s.threads, inter_op_threads=s.inter_op_threads)
            # OpenCV's own pool (one thread a core) splits small jobs (a burst's optical flow, a chip's warp)
            # that concurrent requests already spread over the cores; its hand-offs cost CPU: a burst's
            # tracking took 47 ms of CPU with the pool, 38 without (services/embedder/README.md "Liveness").
            cv2.setNumThreads(1)
            self.detector.device = pick_device(s.device).lstrip("/")
            self.detector.load()
            self.model.load()
            self.landmarks.load()
            self.state = "warming"
            # First calls pay TF graph optimisation; warm the batch sizes the batchers will use.
            self.model.warm_up((1, min(8, s.max_batch)))
            self.detector.warm_up()
            self.state = "ready"
            metrics.READY.set(1)
            log.info(
                "embedder ready: model=%s device=%s gpus=%s in %.1fs",
                s.model_id, self.model.device, gpus, time.perf_counter() - t0,
            )  # fmt: skip
        except Exception as exc:
            self.state = f"failed: {type(exc).__name__}: {exc}"
            metrics.READY.set(0)
            raise

    def start_batchers(self) -> None:
        """Create the batchers on the running event loop (the app's lifespan calls this)."""
        s = self.settings
        if self._detect_batcher is None:
            self._detect_batcher = MicroBatcher(
                self.detector.run,
                max_batch=s.detect_max_batch,
                max_wait_s=s.detect_max_wait_ms / 1000,
                name="detect",
                observer=metrics.observe_batch("detect"),
            )
        if self._embed_batcher is None:
            self._embed_batcher = MicroBatcher(
                self._embed_list,
                max_batch=s.max_batch,
                max_wait_s=s.max_wait_ms / 1000,
                name="embed",
                observer=metrics.observe_batch("embed"),
            )
        self._detect_batcher.start()
        self._embed_batcher.start()

    async def aclose(self) -> None:
        for b in (self._detect_batcher, self._embed_batcher):
            if b is not None:
                await b.close()
        self._detect_batcher = self._embed_batcher = None

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """The model's embeddings of these chips, through the head when one is configured."""
        emb = self.model.embed(chips)
        return emb if self.head is None else self.head.apply(emb)

    def _embed_list(self, chips: list[np.ndarray]) -> list[np.ndarray]:
        return list(self.embed_chips(np.stack(chips)))

    def _require_ready(self) -> None:
        if not self.ready:
            raise ServiceUnavailable(f"models not ready ({self.state})", code="not_ready")

    def rules(self, profile: QualityProfile) -> QualityThresholds:
        return self.settings.enrol if profile == QualityProfile.ENROL else self.settings.gate

    # -- shared steps ------------------------------------------------------------------------------------
    def decode(self, data: bytes) -> DecodedImage:
        s = self.settings
        return decode_image(
            data, max_pixels=s.max_image_pixels, min_side=s.min_image_side, max_decode_bytes=s.max_decode_bytes
        )

    def analyse(
        self,
        image: DecodedImage,
        dets: list[Detection],
        profile: QualityProfile,
        max_faces: int | None,
    ) -> _Analysis:
        rules = self.rules(profile)
        limit = self.settings.max_faces if max_faces is None else max_faces
        faces = dets[: max(limit, 0)]
        chips = extract_chips(image.rgb, faces, self.model.geometry, self.align)
        qualities = [assess_face(d, c, rules) for d, c in zip(faces, chips, strict=True)]
        reasons = image_reasons(dets, rules)
        if faces:
            # The dominant (largest) face decides; its own reasons explain a failure.
            reasons += [r for r in qualities[0].reasons if r not in reasons]
        passed = bool(faces) and not reasons
        return _Analysis(image, faces, chips, qualities, reasons, passed)

    def respond(self, a: _Analysis, embeddings: np.ndarray, profile: QualityProfile) -> EmbedResponse:
        faces = [face_message(d, q, e) for d, q, e in zip(a.faces, a.qualities, embeddings, strict=True)]
        metrics.FACES_PER_IMAGE.observe(len(a.faces))
        metrics.IMAGES.labels(profile.value, str(a.passed).lower()).inc()
        for r in a.reasons:
            metrics.QUALITY_REASONS.labels(profile.value, r.value).inc()
        return EmbedResponse(
            model=self.descriptor,
            image=ImageInfo(
                width=a.image.width, height=a.image.height, orientation_applied=a.image.orientation_applied
            ),
            profile=profile,
            faces=faces,
            passed=a.passed,
            reasons=a.reasons,
        )

    # -- synchronous API (in-process users) --------------------------------------------------------------
    def embed_image(
        self,
        data: bytes,
        *,
        profile: QualityProfile = QualityProfile.GATE,
        max_faces: int | None = None,
        min_face_size: int | None = None,
    ) -> EmbedResponse:
        self._require_ready()
        t0 = time.perf_counter()
        image = self.decode(data)
        t1 = time.perf_counter()
        with self._lock:
            dets = self.detector.detect(image.rgb, min_face_size)
            t2 = time.perf_counter()
            a = self.analyse(image, dets, QualityProfile(profile), max_faces)
            t3 = time.perf_counter()
            emb = self.embed_chips(a.chips)
        t4 = time.perf_counter()
        _observe_stages(t0, t1, t2, t3, t4)
        return self.respond(a, emb, QualityProfile(profile))

    # -- async API (the service) -------------------------------------------------------------------------
    def _batchers(self) -> tuple[MicroBatcher[DetectJob, list[Detection]], MicroBatcher[np.ndarray, np.ndarray]]:
        if self._detect_batcher is None or self._embed_batcher is None:
            self.start_batchers()
        assert self._detect_batcher is not None and self._embed_batcher is not None
        return self._detect_batcher, self._embed_batcher

    async def adecode(self, data: bytes) -> DecodedImage:
        """Decode off the event loop, within the concurrent-decode bound."""
        async with self._decode_slots:
            return await asyncio.to_thread(self.decode, data)

    async def adetect(self, rgb: np.ndarray, min_face_size: int | None = None) -> list[Detection]:
        """MTCNN on one frame through the shared detection batcher (largest face first)."""
        self._require_ready()
        job = await asyncio.to_thread(self.detector.prepare, rgb, min_face_size)
        return await self._batchers()[0].submit(job)

    async def aembed_chips(self, chips: list[np.ndarray]) -> np.ndarray:
        """Embeddings of chips through the shared embedding batcher."""
        self._require_ready()
        vectors = await self._batchers()[1].submit_many(chips)
        return np.stack(vectors) if vectors else np.zeros((0, self.descriptor.dim), np.float32)

    async def aembed_image(
        self,
        data: bytes,
        *,
        profile: QualityProfile = QualityProfile.GATE,
        max_faces: int | None = None,
        min_face_size: int | None = None,
    ) -> EmbedResponse:
        self._require_ready()
        detect_batcher, _ = self._batchers()
        profile = QualityProfile(profile)
        t0 = time.perf_counter()
        # Decoding and resizing release the GIL; keep them off the event loop too.
        image = await self.adecode(data)
        job = await asyncio.to_thread(self.detector.prepare, image.rgb, min_face_size)
        t1 = time.perf_counter()
        dets = await detect_batcher.submit(job)
        t2 = time.perf_counter()
        a = await asyncio.to_thread(self.analyse, image, dets, profile, max_faces)
        t3 = time.perf_counter()
        emb = await self.aembed_chips(list(a.chips))
        t4 = time.perf_counter()
        _observe_stages(t0, t1, t2, t3, t4)
        return self.respond(a, emb, profile)


def face_message(d: Detection, quality: FaceQuality, embedding: np.ndarray) -> Face:
    """One detected, scored and embedded face as the API reports it."""
    return Face(
        box=Box(
            x=round(float(d.box[0])),
            y=round(float(d.box[1])),
            width=round(float(d.box[2])),
            height=round(float(d.box[3])),
        ),
        landmarks=Landmarks(
            **{
                k: (round(float(p[0]), 2), round(float(p[1]), 2))
                for k, p in zip(LANDMARK_KEYS, d.landmarks, strict=True)
            }
        ),
        score=round(d.score, 5),
        quality=quality,
        embedding=embedding.astype(float).tolist(),
    )


def _observe_stages(t0: float, t1: float, t2: float, t3: float, t4: float) -> None:
    """Stage latencies of one image: decode, detect, align (chips + quality), embed, and the whole."""
    spans = {"decode": t1 - t0, "detect": t2 - t1, "align": t3 - t2, "embed": t4 - t3, "total": t4 - t0}
    for name, dt in spans.items():
        metrics.STAGE_SECONDS.labels(name).observe(dt)
