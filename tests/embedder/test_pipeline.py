"""The real pipeline (MTCNN + FaceNet) on real photos, in-process."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from services.contracts.embedder import QualityProfile, QualityReason
from services.contracts.models import DEFAULT_MODEL_ID
from services.embedder.models.tf_runtime import _set_batch_dims
from services.embedder.pipeline import FacePipeline
from tests.embedder.helpers import cosine_distance, encode, iou


def test_model_descriptor_and_embedding_shape(pipeline: FacePipeline, faces_dir: Path) -> None:
    res = pipeline.embed_image((faces_dir / "dev/Tony_Blair/2.jpg").read_bytes())
    assert res.model.id == DEFAULT_MODEL_ID and res.model.dim == pipeline.descriptor.dim
    assert len(res.faces) >= 1
    emb = np.asarray(res.faces[0].embedding)
    assert emb.shape == (res.model.dim,)
    assert abs(np.linalg.norm(emb) - 1.0) < 1e-4


@pytest.mark.parametrize("name", ["1.jpg", "2.jpg", "3.jpg"])
def test_noface_photos_give_no_faces(pipeline: FacePipeline, faces_dir: Path, name: str) -> None:
    # 1.jpg is a park with tiny distant people (faces < 10 px at 640x427): below the 20 px minimum.
    res = pipeline.embed_image((faces_dir / "noface" / name).read_bytes(), profile=QualityProfile.ENROL)
    assert res.faces == []
    assert res.passed is False
    assert res.reasons == [QualityReason.NO_FACE]


@pytest.mark.parametrize("name", ["2.jpg", "3.jpg", "4.jpg", "5.jpg", "6.jpg", "7.jpg"])
def test_group_photos_give_several_distinct_faces(pipeline: FacePipeline, faces_dir: Path, name: str) -> None:
    res = pipeline.embed_image((faces_dir / "group" / name).read_bytes(), profile=QualityProfile.ENROL)
    assert len(res.faces) >= 2
    boxes = [(f.box.x, f.box.y, f.box.width, f.box.height) for f in res.faces]
    assert all(iou(a, b) < 0.3 for a, b in itertools.combinations(boxes, 2))
    areas = [b[2] * b[3] for b in boxes]
    # largest (box area) first; boxes are rounded to whole pixels in the response, so near-ties may swap
    assert all(a >= 0.95 * b for a, b in itertools.pairwise(areas))
    for f in res.faces:
        w, h = res.image.width, res.image.height
        assert 0 <= f.box.x < w and 0 <= f.box.y < h
        assert f.box.x <= f.landmarks.nose[0] <= f.box.x + f.box.width


def test_small_faces_with_a_smaller_min_face_size(pipeline: FacePipeline, faces_dir: Path) -> None:
    """group/1.jpg: ~25 people whose faces are 12-30 px in a 640 px photo."""
    data = (faces_dir / "group/1.jpg").read_bytes()
    default = pipeline.embed_image(data, max_faces=100)
    assert len(default.faces) >= 5
    assert all(max(f.box.width, f.box.height) >= 20 for f in default.faces)
    small = pipeline.embed_image(data, min_face_size=12, max_faces=100)
    assert len(small.faces) > len(default.faces)
    assert QualityReason.MULTIPLE_FACES in small.reasons


def test_max_faces_limits_faces_not_reasons(pipeline: FacePipeline, faces_dir: Path) -> None:
    res = pipeline.embed_image((faces_dir / "group/7.jpg").read_bytes(), profile=QualityProfile.ENROL, max_faces=1)
    assert len(res.faces) == 1
    assert QualityReason.MULTIPLE_FACES in res.reasons and not res.passed


def test_small_background_face_does_not_block_enrolment(pipeline: FacePipeline, faces_dir: Path) -> None:
    # Barack_Obama/1.jpg (910x1137): a second face at ~20% of the main face's height in the background. It is
    # 73 px, so it needs a 640 px detector view (the 480 px default misses it).
    side = pipeline.detector.max_side
    pipeline.detector.max_side = 640
    try:
        data = (faces_dir / "dev/Barack_Obama/1.jpg").read_bytes()
        res = pipeline.embed_image(data, profile=QualityProfile.ENROL)
    finally:
        pipeline.detector.max_side = side
    assert len(res.faces) >= 2
    assert res.faces[1].box.height < 0.5 * res.faces[0].box.height
    assert res.passed, res.reasons


def test_graph_batch_fix_rewrites_the_batch_one_constants() -> None:
    import tensorflow as tf

    from services.embedder.models.facenet import graph_path

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_path().read_bytes())
    names = {n.name for n in graph_def.node}
    assert "phase_train" not in names  # nothing to feed: this export is inference-only
    # placeholder batch dim + [1, -1] flatten + [1, 512] bottleneck reshape
    assert _set_batch_dims(graph_def, input_name="input") == 3
    assert _set_batch_dims(graph_def, input_name="input") == 0


def test_exif_rotated_copy_gives_the_same_face(pipeline: FacePipeline, faces_dir: Path) -> None:
    original = Image.open(faces_dir / "dev/Colin_Powell/1.jpg").convert("RGB")
    upright_png = encode(original, "PNG")
    # Store the pixels rotated 90 degrees clockwise and tag them "rotate 90 CCW to view" (orientation 8)...
    exif = Image.Exif()
    exif[0x0112] = 8
    rotated = encode(original.transpose(Image.Transpose.ROTATE_270), "PNG", exif=exif)
    ref = pipeline.embed_image(upright_png)
    res = pipeline.embed_image(rotated)
    assert res.image.orientation_applied and not ref.image.orientation_applied
    assert (res.image.width, res.image.height) == original.size
    assert len(res.faces) == len(ref.faces) >= 1
    assert (
        iou(
            (res.faces[0].box.x, res.faces[0].box.y, res.faces[0].box.width, res.faces[0].box.height),
            (ref.faces[0].box.x, ref.faces[0].box.y, ref.faces[0].box.width, ref.faces[0].box.height),
        )
        > 0.95
    )
    assert cosine_distance(res.faces[0].embedding, ref.faces[0].embedding) < 1e-3
    # ...and as a JPEG (recompressed): still the same person by a wide margin.
    jpeg = encode(original.transpose(Image.Transpose.ROTATE_270), "JPEG", exif=exif, quality=95)
    res_jpeg = pipeline.embed_image(jpeg)
    assert res_jpeg.image.orientation_applied
    assert cosine_distance(res_jpeg.faces[0].embedding, ref.faces[0].embedding) < 0.05


def _degrade(path: Path, how: str) -> bytes:
    img = Image.open(path).convert("RGB")
    arr = np.asarray(img, dtype=np.float32)
    if how == "dark":
        arr = arr * 0.12
    elif how == "bright":
        arr = 255 - (255 - arr) * 0.25  # much brighter and MTCNN stops finding the face at all
    elif how == "blur":
        return encode(img.filter(ImageFilter.GaussianBlur(radius=img.width / 70)), "PNG")
    return encode(Image.fromarray(arr.clip(0, 255).astype(np.uint8)), "PNG")


@pytest.mark.parametrize(
    ("how", "photo", "reason"),
    [
        ("dark", "deepface_p04/1.jpg", QualityReason.TOO_DARK),
        ("bright", "deepface_p07/2.jpg", QualityReason.TOO_BRIGHT),
        ("blur", "deepface_p04/1.jpg", QualityReason.BLURRED),
    ],
)
def test_degraded_photos_get_named_reasons(
    pipeline: FacePipeline, faces_dir: Path, how: str, photo: str, reason: QualityReason
) -> None:
    path = faces_dir / "dev" / photo
    assert pipeline.embed_image(path.read_bytes(), profile=QualityProfile.ENROL).passed
    res = pipeline.embed_image(_degrade(path, how), profile=QualityProfile.ENROL)
    assert res.faces, "the degraded face should still be detected"
    assert reason in res.faces[0].quality.reasons
    assert reason in res.reasons and not res.passed


def test_profile_turned_head_is_extreme_pose_for_enrol_only(pipeline: FacePipeline, faces_dir: Path) -> None:
    data = (faces_dir / "dev/Ben_Affleck/5.jpg").read_bytes()  # head turned about 60 degrees
    enrol = pipeline.embed_image(data, profile=QualityProfile.ENROL)
    assert QualityReason.EXTREME_POSE in enrol.reasons
    assert abs(enrol.faces[0].quality.yaw) > 0.45


@pytest.mark.parametrize(
    ("size", "min_face_size"),
    [
        ((32, 32), None),
        ((33, 57), None),
        ((64, 48), 12),
        ((320, 240), None),
        ((640, 480), 12),
        ((640, 480), 20),
        ((640, 480), 40),
        ((640, 480), 100),
        ((640, 480), 400),
        ((640, 480), 4096),
        ((1920, 1080), None),
        ((1920, 1080), 300),
        ((4000, 300), None),
        ((300, 4000), 12),
    ],
)
def test_detector_scales_never_crash(pipeline: FacePipeline, size: tuple[int, int], min_face_size: int | None) -> None:
    rng = np.random.default_rng(sum(size))
    noise = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    res = pipeline.embed_image(encode(Image.fromarray(noise), "PNG"), min_face_size=min_face_size)
    assert res.image.width == size[0]
    for f in res.faces:
        assert max(f.box.width, f.box.height) >= (min_face_size or pipeline.settings.min_face_size) - 1


def test_batched_detection_equals_single(pipeline: FacePipeline, faces_dir: Path) -> None:
    frames = [pipeline.decode((faces_dir / f"dev/George_W_Bush/{i}.jpg").read_bytes()).rgb for i in (1, 2, 3)]
    together = pipeline.detector.detect_many(frames)
    for frame, batched in zip(frames, together, strict=True):
        alone = pipeline.detector.detect(frame)
        assert len(alone) == len(batched) >= 1
        for a, b in zip(alone, batched, strict=True):
            assert np.abs(a.box - b.box).max() < 1.0 and np.abs(a.landmarks - b.landmarks).max() < 1.0
            assert abs(a.score - b.score) < 1e-3


def test_float32_inputs_give_mtcnns_own_detections(
    pipeline: FacePipeline, faces_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The detector hands MTCNN one float32 tensor (for speed); its boxes, points and scores must be those of
    mtcnn's own float64 path, on single photos, a group photo and a batch."""
    import mtcnn.mtcnn as entry
    from mtcnn.utils.images import standarize_batch

    assert getattr(entry.standarize_batch, "facegate_float32", False), "the float32 inputs are not installed"
    frames = [
        pipeline.decode((faces_dir / path).read_bytes()).rgb
        for path in ("dev/George_W_Bush/1.jpg", "dev/Tony_Blair/2.jpg", "group/1.jpg")
    ]
    fast = [pipeline.detector.detect(f) for f in frames] + pipeline.detector.detect_many(frames[:2])
    monkeypatch.setattr(entry, "standarize_batch", standarize_batch)
    own = [pipeline.detector.detect(f) for f in frames] + pipeline.detector.detect_many(frames[:2])
    assert sum(len(d) for d in own) >= 6  # the group photo has several faces
    for a, b in zip(fast, own, strict=True):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x.box, y.box, atol=1e-3)
            np.testing.assert_allclose(x.landmarks, y.landmarks, atol=1e-3)
            assert abs(x.score - y.score) < 1e-6
