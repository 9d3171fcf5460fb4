"""A newcomer's first screen: `make run` shows the services' own lines, not TensorFlow's start-up banners, and
our detector warm-up triggers no TensorFlow warning at all (real TensorFlow, real MTCNN)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from services.stack import REPO, _copy_quietly

WARM_UP = (
    "from services.embedder.detector import FaceDetector\n"
    "d = FaceDetector(max_side=480, max_side_small=1600, face_px=40, min_face_size=20, batch_pixels=3276800)\n"
    "d.load(); d.warm_up(); print('warmed up', flush=True)\n"
)


def _run(code: str, **env: str) -> bytes:
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=300,
        check=True,
    )
    return r.stdout


def test_detector_warm_up_logs_no_tensorflow_warning() -> None:
    raw = _run(WARM_UP, FACEGATE_VERBOSE="1")  # verbose: nothing is filtered or hidden
    assert b"warmed up" in raw
    assert b"INVALID_ARGUMENT" not in raw and b"W0000" not in raw, raw.decode(errors="replace")


def test_the_supervisor_drops_library_banners_and_keeps_our_lines() -> None:
    raw = _run("import tensorflow\nprint('facegate line', flush=True)\n", FACEGATE_VERBOSE="1")
    assert b"oneDNN" in raw or b"absl::InitializeLog" in raw or b"cpu_feature_guard" in raw  # what there is to hide
    out = io.BytesIO()
    _copy_quietly(io.BytesIO(raw + b"E0000 00:00:17.5 12 x.cc:1] a real error\n"), out)
    shown = out.getvalue()
    assert b"facegate line" in shown and b"a real error" in shown
    for noise in (b"oneDNN", b"absl::InitializeLog", b"cpu_feature_guard", b"To enable the following"):
        assert noise not in shown, shown.decode(errors="replace")
