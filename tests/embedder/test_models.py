"""Every registered model, through the same pipeline: batching, the HTTP service, and the calibrated thresholds
(real weights, real dev photos). The thresholds in services/contracts/models.py must be reproducible here."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from pytest import FixtureRequest

from services.contracts.models import DEFAULT_MODEL_ID, MODELS
from services.embedder.align import extract_chips
from services.embedder.app import create_app
from services.embedder.calibrate import embed_folder, fmr_fnmr, load_labelled, pair_distances
from services.embedder.pipeline import FacePipeline
from services.embedder.settings import EmbedderSettings
from tests.conftest import EMBEDDER_HEADERS

MODEL_IDS = [DEFAULT_MODEL_ID, *sorted(m for m in MODELS if m != DEFAULT_MODEL_ID)]


@pytest.fixture(scope="session", params=MODEL_IDS)
def model_pipeline(request: FixtureRequest, pipeline: FacePipeline) -> FacePipeline:
    """The session's default pipeline, or one more per other model (built once)."""
    if request.param == pipeline.descriptor.id:
        return pipeline
    other = FacePipeline(EmbedderSettings(model_id=request.param))
    other.load()
    return other


@pytest.fixture(scope="session")
def dev_distances(model_pipeline: FacePipeline, faces_dir: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    embs, labels, failed = embed_folder(model_pipeline, load_labelled(faces_dir / "dev"))
    genuine, impostor = pair_distances(embs, labels)
    return genuine, impostor, failed


def test_batch_equals_one_by_one(model_pipeline: FacePipeline, dev_images: list[tuple[str, Path]]) -> None:
    p = model_pipeline
    chips = []
    for _, path in dev_images[::16]:
        image = p.decode(path.read_bytes())
        dets = p.detector.detect(image.rgb)
        chips.append(extract_chips(image.rgb, dets[:1], p.model.geometry, p.align)[0])
    batch = np.stack(chips)
    together = p.model.embed(batch)
    alone = np.concatenate([p.model.embed(batch[i : i + 1]) for i in range(len(batch))])
    assert together.shape == (len(chips), p.descriptor.dim)
    assert np.abs(together - alone).max() < 1e-4
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


async def test_served_over_http(model_pipeline: FacePipeline, faces_dir: Path) -> None:
    app = create_app(pipeline=model_pipeline)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://e", headers=EMBEDDER_HEADERS) as http,
    ):
        model = (await http.get("/v1/model")).json()
        photo = (faces_dir / "dev/Colin_Powell/1.jpg").read_bytes()
        r = await http.post("/v1/embed?profile=enrol", content=photo, headers={"content-type": "image/jpeg"})
    assert model["id"] == model_pipeline.descriptor.id
    body = r.json()
    assert r.status_code == 200 and body["passed"], body.get("reasons")
    assert body["model"]["id"] == model["id"] and len(body["faces"][0]["embedding"]) == model["dim"]


def test_shipped_thresholds_hold_on_the_dev_set(model_pipeline: FacePipeline, dev_distances) -> None:
    genuine, impostor, failed = dev_distances
    d = model_pipeline.descriptor
    assert failed == []  # every dev photo has a face
    fmr_v, fnmr_v = fmr_fnmr(genuine, impostor, d.verify_threshold)
    fmr_i, fnmr_i = fmr_fnmr(genuine, impostor, d.identify_threshold)
    print(f"\n{d.id}: verify t={d.verify_threshold} FMR {fmr_v:.4%} TAR {1 - fnmr_v:.2%}; "
          f"identify t={d.identify_threshold} FMR {fmr_i:.4%} TAR {1 - fnmr_i:.2%}")  # fmt: skip
    # The operating points they were calibrated for: FMR <= 1e-3 (1:1) and <= 1e-4 (1:K).
    assert fmr_v <= 1e-3 and fmr_i <= 1e-4
    if d.id == DEFAULT_MODEL_ID:
        # The served default: same-person pairs under the threshold and different-person pairs above it,
        # >= 95% each, at the access-control operating point itself.
        assert 1 - fnmr_v >= 0.95 and 1 - fmr_v >= 0.95
    else:
        # FaceNet-CASIA cannot reach 95% of genuine pairs at FMR 1e-3 on these photos (73% measured; README
        # "Calibration"). It still separates the two sets at 95/95 at a laxer point (its EER is 3.6%).
        assert 1 - fnmr_v >= 0.70
        t = float(np.quantile(genuine, 0.95))
        assert np.mean(impostor > t) >= 0.95
