"""The synthetic presentation-attack generator: deterministic with a seed, and what it renders is a burst the
embedder can read (a real photo from the dev set, the real decoder)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.embedder.imaging import decode_image
from services.tools.attacks import HEIGHT, WIDTH, AttackKind, photo_attack, portrait, replay_attack


@pytest.fixture(scope="module")
def photo(faces_dir: Path) -> np.ndarray:
    rgb = np.asarray(Image.open(faces_dir / "dev/Tony_Blair/1.jpg").convert("RGB"))
    return portrait(rgb, np.array([70.0, 60.0, 110.0, 130.0]))


def _digest(frames: list[bytes]) -> str:
    return hashlib.sha256(b"".join(frames)).hexdigest()


@pytest.mark.parametrize("kind", [AttackKind.PRINT, AttackKind.CURVED, AttackKind.SCREEN])
def test_same_seed_same_burst(photo: np.ndarray, kind: AttackKind) -> None:
    a = photo_attack(kind, photo, np.random.default_rng(5))
    b = photo_attack(kind, photo, np.random.default_rng(5))
    c = photo_attack(kind, photo, np.random.default_rng(6))
    assert _digest(a) == _digest(b) and _digest(a) != _digest(c)
    assert 6 <= len(a) <= 10
    first, last = (decode_image(f).rgb for f in (a[0], a[-1]))
    assert first.shape == (HEIGHT, WIDTH, 3)
    # The picture moves: consecutive frames of a path are not copies of each other.
    assert float(np.abs(first.astype(np.int16) - last.astype(np.int16)).mean()) > 2.0


def test_replay_keeps_the_recording_and_is_deterministic(photo: np.ndarray) -> None:
    clip = [np.roll(photo, 4 * i, axis=1) for i in range(6)]  # a "recording" whose content moves
    a = replay_attack(clip, np.random.default_rng(1))
    assert len(a) == len(clip) and _digest(a) == _digest(replay_attack(clip, np.random.default_rng(1)))


def test_portrait_centres_the_face() -> None:
    rgb = np.zeros((200, 300, 3), np.uint8)
    rgb[80:120, 180:220] = 255  # the "face"
    crop = portrait(rgb, np.array([180.0, 80.0, 40.0, 40.0]))
    assert crop.shape[0] == crop.shape[1] == round(40 / 0.45)
    ys, xs = np.nonzero(crop[:, :, 0] > 128)
    assert abs(ys.mean() - crop.shape[0] / 2) < 1.5 and abs(xs.mean() - crop.shape[1] / 2) < 1.5
