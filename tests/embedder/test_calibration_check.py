"""CI re-derives the default model's calibration from `calib/` through today's pipeline, so a change to
detection, alignment or the model cannot silently move the operating point, and measures the shipped file on
the held-back identities, with stated headroom.

About two minutes on two cores (3,799 photos). Headroom: the shipped fit and today's refit must agree within 3%
of the distance (a moved pipeline shifts them by more; re-running `facegate calibrate --write` is then the fix,
with the README's tables); held-back rates within a factor of two of their targets, as the README promises.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.contracts.calibration import DEFAULT_TARGET_FMR, DEFAULT_TARGET_FPIR, load_calibration
from services.contracts.models import DEFAULT_MODEL_ID
from services.embedder.pipeline import FacePipeline
from services.tools import fit
from services.tools.faceset import FaceSet, embed_faceset


@pytest.fixture(scope="module")
def calib_set(faces_dir: Path, pipeline: FacePipeline) -> FaceSet:
    folder = faces_dir / "calib"
    if not folder.is_dir():
        pytest.skip(f"no calibration photos at {folder}")
    assert pipeline.descriptor.id == DEFAULT_MODEL_ID
    return embed_faceset(folder, DEFAULT_MODEL_ID, pipeline=pipeline, progress=False)


def test_refit_on_todays_pipeline_matches_the_shipped_calibration(calib_set: FaceSet) -> None:
    shipped = load_calibration(DEFAULT_MODEL_ID)
    assert shipped is not None
    fs = calib_set
    assert int((~fs.has_face).sum()) <= 0.01 * len(fs.paths)
    held = fit.held_back_mask(fs.labels)
    part = fs.subset(fs.has_face & ~held)
    refit = fit.fit_calibration(
        DEFAULT_MODEL_ID, part.embeddings, part.labels, held_back_identities=0, data="ci", seed=1
    )
    assert refit.fit_identities == shipped.fit_identities
    for target in (1e-2, DEFAULT_TARGET_FMR, 1e-4, 1e-6):
        assert refit.threshold_at_fmr(target) == pytest.approx(shipped.threshold_at_fmr(target), rel=0.03), target


def test_shipped_calibration_holds_on_the_held_back_identities(calib_set: FaceSet) -> None:
    cal = load_calibration(DEFAULT_MODEL_ID)
    assert cal is not None
    fs = calib_set
    held = fs.subset(fs.has_face & fit.held_back_mask(fs.labels))
    assert len(np.unique(held.labels)) == cal.held_back_identities
    fmr, _ = fit.verify_rates(held.embeddings, held.labels, cal.verify_threshold(DEFAULT_TARGET_FMR))
    assert DEFAULT_TARGET_FMR / 2 <= fmr.value <= DEFAULT_TARGET_FMR * 2, fmr.text()
    for k in (100, 300):
        run = fit.simulate_identify(held.embeddings, held.labels, cal, k=k, target_fpir=DEFAULT_TARGET_FPIR, repeats=20)
        assert DEFAULT_TARGET_FPIR / 2 <= run.fpir.value <= DEFAULT_TARGET_FPIR * 2, (k, run.fpir.text())
        assert run.wrong_person.value <= 0.002, (k, run.wrong_person.text())
        assert run.fnir.value < 0.5, (k, run.fnir.text())  # README: 26% at K=100, 35% at K=300
