"""Issue 14: the decoding budget (services/embedder/imaging.py). Only JPEG, PNG and WebP decoders are reachable,
chosen by signature; an image's decoded bytes are bounded from its header (16-bit and alpha modes cost more than
8-bit RGB), large JPEGs are decoded at reduced scale instead, and a burst of hostile images leaves the process's
memory about where it started. Fast: no models, no photos.
"""

from __future__ import annotations

import gc
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from services.common.errors import FacegateError
from services.embedder.imaging import MAX_DECODE_BYTES, decode_image, peak_bytes, release_memory, sniff_format
from tests.embedder.helpers import encode

MB = 1024 * 1024


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def refused(data: bytes, **kw: int) -> tuple[int, str]:
    with pytest.raises(FacegateError) as err:
        decode_image(data, **kw)
    return err.value.status_code, err.value.error_code


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO", "PPM", "PCX"])
def test_other_image_formats_are_refused_by_signature(fmt: str) -> None:
    img = Image.new("RGB", (64, 64), (120, 90, 60))
    assert refused(encode(img, fmt)) == (415, "unsupported_image_format")


def test_formats_come_from_the_bytes_not_the_name() -> None:
    img = Image.new("RGB", (64, 64))
    assert sniff_format(encode(img, "JPEG")) == "JPEG"
    assert sniff_format(encode(img, "PNG")) == "PNG"
    assert sniff_format(encode(img, "WEBP")) == "WEBP"
    assert refused(b"<svg xmlns='http://www.w3.org/2000/svg'/>") == (422, "invalid_image")
    # a PNG signature on GIF data: only the PNG decoder is tried, and it refuses
    gif = encode(img, "GIF")
    assert refused(b"\x89PNG\r\n\x1a\n" + gif[8:]) == (422, "invalid_image")


def test_a_16_bit_png_under_the_pixel_cap_is_refused_before_decoding() -> None:
    """The issue's 77 KB image: 16-bit grey, just under the 40 Mpx cap, 3 s and ~1.2 GB to decode before."""
    data = encode(Image.new("I;16", (6000, 6600)), "PNG", compress_level=9)
    assert len(data) < 200_000
    before = rss()
    start = time.perf_counter()
    assert refused(data) == (413, "image_too_large")
    took = time.perf_counter() - start
    assert took < 0.5, took  # the header only
    assert rss() - before < 20 * MB


def test_decoded_bytes_follow_the_mode() -> None:
    assert peak_bytes("I;16", 1000, 1000) > peak_bytes("L", 1000, 1000)
    assert peak_bytes("RGBA", 1000, 1000) > peak_bytes("RGB", 1000, 1000)
    # an RGB PNG that fits the budget decodes; the same pixels in RGBA need more than a small budget allows
    rgb = encode(Image.new("RGB", (2000, 2000), (10, 20, 30)), "PNG")
    assert decode_image(rgb, max_decode_bytes=32 * MB).rgb.shape == (2000, 2000, 3)
    rgba = encode(Image.new("RGBA", (2000, 2000), (10, 20, 30, 40)), "PNG")
    assert refused(rgba, max_decode_bytes=32 * MB) == (413, "image_too_large")


def test_a_large_jpeg_is_decoded_at_reduced_scale() -> None:
    img = Image.fromarray(
        np.tile(np.arange(256, dtype=np.uint8), (4000, 24))[:, :6000].repeat(3).reshape(4000, 6000, 3)
    )
    data = encode(img, "JPEG", quality=80)
    out = decode_image(data, max_decode_bytes=64 * MB)  # 24 Mpx RGB needs ~168 MB: decoded at 1/2
    assert out.rgb.shape == (2000, 3000, 3)
    full = decode_image(data)  # the default budget takes it whole
    assert full.rgb.shape == (4000, 6000, 3)
    assert peak_bytes("RGB", 6000, 4000) <= MAX_DECODE_BYTES


def test_high_bit_depth_stays_in_integers() -> None:
    grey = (np.linspace(0, 65535, 3000 * 2000).reshape(2000, 3000)).astype(np.uint16)
    data = encode(Image.fromarray(grey), "PNG")
    before = rss()
    out = decode_image(data)
    assert out.rgb[0, 0, 0] == 0 and out.rgb[-1, -1, 0] == 255
    del out
    assert rss() - before < 60 * MB  # 6 Mpx: 2-byte storage + 1-byte grey + 3-byte RGB, no float64 copies


def test_memory_returns_after_a_burst_of_100_hostile_images() -> None:
    """100 hostile images, 4 at a time (the embedder itself decodes 2 at once): RSS before, at peak, after."""
    hostile = [
        encode(Image.new("I;16", (6000, 6600)), "PNG", compress_level=9),  # refused from the header
        encode(Image.new("RGB", (7000, 5600), (200, 10, 10)), "JPEG", quality=50),  # 39 Mpx: decoded at 1/2
        encode(Image.new("RGBA", (4600, 4600), (0, 0, 0, 0)), "PNG", compress_level=9),  # over the budget
        encode(Image.new("RGB", (5000, 5000), (9, 9, 9)), "WEBP", quality=10),  # 25 Mpx WebP: ~425 MB, refused
        encode(Image.new("L", (6000, 6000)), "PNG", compress_level=9),  # 36 Mpx grey: decodes (180 MB peak)
    ]
    assert all(len(h) < 1_500_000 for h in hostile)
    gc.collect()
    release_memory()
    before = rss()
    peak = before
    outcomes: dict[str, int] = {}

    def one(data: bytes) -> str:
        try:
            out = decode_image(data)
            del out
            return "decoded"
        except FacegateError as exc:
            return exc.error_code

    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(one, hostile[i % len(hostile)]) for i in range(100)]
        while not all(f.done() for f in futures):
            peak = max(peak, rss())
            time.sleep(0.01)
        for f in futures:
            outcomes[f.result()] = outcomes.get(f.result(), 0) + 1
    took = time.perf_counter() - start
    gc.collect()
    release_memory()
    after = rss()
    print(
        f"\n100 hostile images in {took:.1f} s {outcomes}: RSS before {before / MB:.0f} MB, "
        f"peak {peak / MB:.0f} MB, after {after / MB:.0f} MB"
    )
    assert outcomes == {"image_too_large": 60, "decoded": 40}, outcomes
    assert after - before < 64 * MB, (before, after)
    assert peak - before < 4 * MAX_DECODE_BYTES + 64 * MB, (before, peak)  # 4 at once, each within budget
