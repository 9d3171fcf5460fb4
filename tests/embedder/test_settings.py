"""Settings come from FACEGATE_EMBEDDER_* with nested `__` keys; unknown models fail clearly."""

from __future__ import annotations

import pytest

from services.embedder.models import create_model
from services.embedder.settings import ENROL_DEFAULT, EmbedderSettings


def test_env_overrides_and_partial_nested_update(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEGATE_EMBEDDER_ENROL__MIN_SCORE", "0.97")
    monkeypatch.setenv("FACEGATE_EMBEDDER_MAX_BATCH", "16")
    monkeypatch.setenv("FACEGATE_EMBEDDER_ALIGN", "landmarks")
    s = EmbedderSettings()
    assert s.enrol.min_score == 0.97
    assert s.enrol.min_inter_eye_px == ENROL_DEFAULT.min_inter_eye_px  # the rest of the profile is kept
    assert (s.max_batch, s.align, s.model_id) == (16, "landmarks", "dlib-resnet-128")


def test_unknown_model_id_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="facenet-casia-512"):
        create_model("no-such-model")
