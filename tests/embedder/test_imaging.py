"""Decoding without the models: modes, EXIF, limits. Fast, no photos needed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from services.common.errors import FacegateError
from services.embedder.imaging import decode_image
from tests.embedder.helpers import encode


def _gradient(w: int = 64, h: int = 48) -> np.ndarray:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    return np.concatenate(
        [np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.full((h, w, 1), 77.0)], 2
    ).astype(np.uint8)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("L", "PNG"),
        ("L", "JPEG"),
        ("CMYK", "JPEG"),
        ("P", "PNG"),
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("1", "PNG"),
        ("I;16", "PNG"),
        ("RGB", "WEBP"),
        ("RGBA", "WEBP"),
    ],
)
def test_modes_become_rgb(mode: str, fmt: str) -> None:
    rgb = Image.fromarray(_gradient())
    if mode == "I;16":
        grey = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        img = Image.fromarray(grey)
    elif mode == "I":
        img = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.int32) * 256)
    elif mode == "F":
        img = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.float32) / 255.0)
    else:
        img = rgb.convert(mode)
    out = decode_image(encode(img, fmt))
    assert out.rgb.dtype == np.uint8 and out.rgb.shape == (48, 64, 3)
    if mode in ("I;16", "I", "F", "L"):
        # High bit depths are rescaled to 8 bits, not clipped to white.
        grey = out.rgb[..., 0].astype(int)
        assert grey.min() < 60 and grey.max() > 180, (grey.min(), grey.max())


def test_transparent_pixels_become_white() -> None:
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)  # fully transparent black
    out = decode_image(encode(Image.fromarray(rgba), "PNG"))
    assert out.rgb.min() == 255


def test_exif_orientation_is_applied() -> None:
    arr = _gradient(80, 40)
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(arr, k=-1)))  # stored rotated 90 deg clockwise
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 CW to view" is orientation 6; 8 undoes a clockwise storage
    out = decode_image(encode(stored, "JPEG", exif=exif, quality=95))
    assert out.orientation_applied
    assert out.rgb.shape == (40, 80, 3)
    assert np.abs(out.rgb.astype(int) - arr.astype(int)).mean() < 6


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_body"),
        (b"hello, I am not an image", "invalid_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "invalid_image"),
    ],
)
def test_bad_bytes(data: bytes, code: str) -> None:
    with pytest.raises(FacegateError) as err:
        decode_image(data)
    assert err.value.error_code == code


def test_truncated_jpeg() -> None:
    data = encode(Image.fromarray(_gradient(256, 256)), "JPEG")
    with pytest.raises(FacegateError) as err:
        decode_image(data[: len(data) // 2])
    assert err.value.error_code == "invalid_image"
    assert err.value.status_code == 422


def test_pixel_bomb_refused_before_decoding() -> None:
    # 8000 x 6000 one-bit PNG: a few kB on the wire, 48 Mpx decoded (limit 40 Mpx).
    data = encode(Image.new("1", (8000, 6000)), "PNG")
    assert len(data) < 100_000
    with pytest.raises(FacegateError) as err:
        decode_image(data)
    assert (err.value.status_code, err.value.error_code) == (413, "image_too_large")


def test_tiny_image() -> None:
    with pytest.raises(FacegateError) as err:
        decode_image(encode(Image.new("RGB", (1, 1)), "PNG"))
    assert (err.value.status_code, err.value.error_code) == (422, "image_too_small")
