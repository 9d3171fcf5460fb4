"""POST /v1/liveness against the real embedder (MTCNN, dlib's 68 points, the ResNet) on real video frames.

Bona fide frames: `live/interview_head_turns.avi` (see ../shared/faces/SOURCES.md); frames 114-128, every
second one, show the interviewee turning his head to his right (towards the image's left edge).
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from services.common.errors import Unprocessable
from services.contracts.liveness import LivenessFailure, LivenessResponse, LivenessVerdict, TurnDirection
from services.embedder.client import EmbedderClient
from tests.conftest import EMBEDDER_HEADERS

RIGHT_TURN_FRAMES = range(114, 129, 2)  # 8 frames, 0.6 s at 25 fps


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _read_clip(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


@pytest.fixture(scope="module")
def interview(faces_dir: Path) -> list[np.ndarray]:
    frames = _read_clip(faces_dir / "live/interview_head_turns.avi")
    assert len(frames) == 139, "the interview clip should have 139 frames"
    return frames


@pytest.fixture(scope="module")
def right_turn(interview: list[np.ndarray]) -> list[bytes]:
    return [_jpeg(interview[i]) for i in RIGHT_TURN_FRAMES]


@pytest.fixture
async def client(embedder_app: FastAPI):  # type: ignore[no-untyped-def]
    async with EmbedderClient(
        "http://embedder", transport=httpx.ASGITransport(app=embedder_app), headers=EMBEDDER_HEADERS
    ) as c:
        yield c


def _files(frames: list[bytes], ctype: str = "image/jpeg") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("frames", (f"{i}.jpg", data, ctype)) for i, data in enumerate(frames)]


async def test_a_real_head_turning_the_asked_way_is_live(client: EmbedderClient, right_turn: list[bytes]) -> None:
    res = await client.liveness(right_turn, TurnDirection.RIGHT)
    assert res.verdict == LivenessVerdict.LIVE and res.failure is None, res
    assert res.frames == 8 and res.turn > 20
    assert res.face is not None and len(res.face.embedding) == res.model.dim
    # The same frames against the other challenge: the head turned, but not as asked.
    wrong = await client.liveness(right_turn, TurnDirection.LEFT)
    assert wrong.verdict == LivenessVerdict.LIVENESS_FAILED
    assert wrong.failure == LivenessFailure.WRONG_DIRECTION and wrong.turn < -20
    assert wrong.face is None  # nothing embedded for a failed geometry


async def test_the_http_shape(embedder_http: httpx.AsyncClient, right_turn: list[bytes]) -> None:
    r = await embedder_http.post("/v1/liveness", params={"direction": "right"}, files=_files(right_turn))
    assert r.status_code == 200, r.text
    body = LivenessResponse.model_validate(r.json())
    assert body.verdict == "live" and 0.0 <= body.planarity <= 1.0


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("no_direction", 422, "validation_error"),
        ("bad_direction", 422, "validation_error"),
        ("too_few", 422, "too_few_frames"),
        ("too_many", 422, "too_many_frames"),
        ("not_multipart", 415, "unsupported_media_type"),
        ("not_an_image", 422, "invalid_image"),
        ("text_part", 415, "unsupported_media_type"),
        ("sizes_differ", 422, "frames_differ"),
        ("body_too_large", 413, "payload_too_large"),
        ("no_token", 401, None),
    ],
)
async def test_bad_bursts_are_refused(
    embedder_http: httpx.AsyncClient, right_turn: list[bytes], case: str, status: int, code: str | None
) -> None:
    params: dict[str, str] = {"direction": "left"}
    kwargs: dict[str, object] = {"files": _files(right_turn[:6])}
    headers: dict[str, str] = {}
    if case == "no_direction":
        params = {}
    elif case == "bad_direction":
        params = {"direction": "up"}
    elif case == "too_few":
        kwargs = {"files": _files(right_turn[:3])}
    elif case == "too_many":
        kwargs = {"files": _files(right_turn + right_turn)}
    elif case == "not_multipart":
        kwargs = {"content": right_turn[0]}
        headers = {"content-type": "image/jpeg"}
    elif case == "not_an_image":
        kwargs = {"files": _files([*right_turn[:5], b"not a jpeg"])}
    elif case == "text_part":
        kwargs = {"files": _files(right_turn[:5]) + _files([b"hello"], "text/plain")}
    elif case == "sizes_differ":
        small = _jpeg(np.asarray(Image.open(io.BytesIO(right_turn[0])).resize((160, 120))))
        kwargs = {"files": _files([*right_turn[:5], small])}
    elif case == "body_too_large":
        kwargs = {"files": _files([b"\xff\xd8\xff" + b"\0" * (1_500_000)] * 6)}
    elif case == "no_token":
        headers = {"Authorization": "Bearer wrong"}
    r = await embedder_http.post("/v1/liveness", params=params, headers=headers, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    if code is not None:
        assert r.json()["code"] == code, r.text


async def test_client_maps_errors(client: EmbedderClient, right_turn: list[bytes]) -> None:
    with pytest.raises(Unprocessable) as err:
        await client.liveness(right_turn[:2], TurnDirection.LEFT)
    assert err.value.error_code == "too_few_frames"
