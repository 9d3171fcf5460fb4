"""`facegate train`: a short run on real photos lowers the triplet loss on identities it never trained on; the
head artefact round-trips, and anything else is refused.

The dev photos (28 identities) are split by the same name hash as calibration: the head trains on the fit
half and the loss is measured on the held-back half. One dlib embedding pass of 150 photos (~20 s on two cores).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.contracts.models import DEFAULT_MODEL_ID
from services.embedder.models.head import HEAD_FORMAT, HEAD_VERSION, BadHead, EmbeddingHead, load_head
from services.tools import fit
from services.tools.faceset import FaceSet, embed_faceset
from services.tools.train import train_head, triplet_loss


@pytest.fixture(scope="module")
def dev_set(faces_dir: Path) -> FaceSet:
    fs = embed_faceset(faces_dir / "dev", DEFAULT_MODEL_ID, progress=False)
    return fs.subset(fs.has_face)


def test_a_short_run_lowers_the_triplet_loss_on_held_back_identities(dev_set: FaceSet, tmp_path: Path) -> None:
    e, labels = dev_set.embeddings, dev_set.labels
    held = fit.held_back_mask(labels)
    assert len(np.unique(labels[held])) >= 8 and len(np.unique(labels[~held])) >= 8
    res = train_head(e[~held], labels[~held], DEFAULT_MODEL_ID, epochs=15, lr=1e-3, p=8, log=False, validate=False)
    before = triplet_loss(e[held], labels[held], res.margin, p=8)
    after = triplet_loss(res.head.apply(e[held]), labels[held], res.margin, p=8)
    assert before > 0
    assert after < before, (before, after)
    # The training loss fell too, and the head moved away from the identity it started at.
    assert res.history[-1]["train"] < res.history[0]["train"]
    assert float(np.abs(res.head.kernel).max()) > 0

    path = tmp_path / "head.npz"
    res.head.header["note"] = "test"
    res.head.save(path)
    back = load_head(path, DEFAULT_MODEL_ID)
    assert back.header["note"] == "test" and back.header["format"] == HEAD_FORMAT
    np.testing.assert_array_equal(back.apply(e[held]), res.head.apply(e[held]))


def test_a_zero_head_is_the_identity() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    head = EmbeddingHead("m", np.zeros((16, 16), np.float32), np.zeros(16, np.float32))
    np.testing.assert_allclose(head.apply(x), x, atol=1e-6)
    with pytest.raises(ValueError, match="takes"):
        head.apply(x[:, :8])


def _write(path: Path, header: dict, kernel: np.ndarray, bias: np.ndarray) -> Path:
    np.savez(path, header=np.asarray(json.dumps(header)), kernel=kernel, bias=bias)
    return path


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"format": "something-else"}, "not a facegate-embedding-head"),
        ({"version": HEAD_VERSION + 1}, "version"),
        ({"model_id": "facenet-casia-512"}, "not 'dlib-resnet-128'"),
        ({"dim_out": 64}, "do not match"),
        ({"nan": True}, "not finite"),
        ({"ints": True}, "not finite floats"),
    ],
)
def test_a_bad_artefact_is_refused(tmp_path: Path, change: dict, match: str) -> None:
    header = {"format": HEAD_FORMAT, "version": HEAD_VERSION, "model_id": DEFAULT_MODEL_ID, "dim_in": 4, "dim_out": 4}
    kernel, bias = np.zeros((4, 4), np.float32), np.zeros(4, np.float32)
    if change.pop("nan", False):
        kernel[1, 2] = np.nan
    if change.pop("ints", False):
        kernel = kernel.astype(np.int32)
    header.update(change)
    with pytest.raises(BadHead, match=match):
        load_head(_write(tmp_path / "h.npz", header, kernel, bias), DEFAULT_MODEL_ID)


def test_garbage_and_pickles_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(BadHead, match="not a readable"):
        load_head(junk)
    pickled = tmp_path / "pickled.npz"
    np.savez(
        pickled, header=np.asarray([{"format": HEAD_FORMAT}], dtype=object), kernel=np.zeros((2, 2)), bias=np.zeros(2)
    )
    with pytest.raises(BadHead, match="not a readable"):
        load_head(pickled)
    with pytest.raises(BadHead, match="not a readable"):
        load_head(tmp_path / "absent.npz")


def test_the_embedder_applies_a_configured_head_under_its_own_model_id(faces_dir: Path, tmp_path: Path) -> None:
    from services.contracts.embedder import QualityProfile
    from services.embedder.pipeline import FacePipeline
    from services.embedder.settings import EmbedderSettings

    rng = np.random.default_rng(0)
    head = EmbeddingHead(DEFAULT_MODEL_ID, (0.05 * rng.normal(size=(128, 128))).astype(np.float32), np.zeros(128))
    path = tmp_path / "head.npz"
    head.save(path)
    with pytest.raises(BadHead, match="not 'facenet-casia-512'"):
        FacePipeline(EmbedderSettings(model_id="facenet-casia-512", head_path=str(path)))
    pipe = FacePipeline(EmbedderSettings(head_path=str(path)))
    assert pipe.descriptor.id == f"{DEFAULT_MODEL_ID}+head-{head.tag}" and pipe.descriptor.dim == 128
    pipe.load()
    photo = sorted((faces_dir / "dev").glob("*/*.jpg"))[0]
    got = pipe.embed_image(photo.read_bytes())
    assert got.model.id == pipe.descriptor.id and got.faces
    image = pipe.decode(photo.read_bytes())
    a = pipe.analyse(image, pipe.detector.detect(image.rgb, None), QualityProfile.GATE, None)
    expected = head.apply(pipe.model.embed(a.chips))
    np.testing.assert_allclose(np.asarray(got.faces[0].embedding), expected[0], atol=1e-5)
    assert np.abs(expected[0] - pipe.model.embed(a.chips)[0]).max() > 1e-3  # the head changed the embedding
