"""Image bytes -> upright RGB uint8 array, with every limit checked before pixels are allocated.

Decoding budget (hostile images are cheap to send and dear to decode):
- **formats by signature**: only JPEG, PNG and WebP, recognised from the bytes (never the declared type), and only
  that format's decoder is allowed to open them; other image formats are a 415 `unsupported_image_format`, bytes
  that are no image a 422 `invalid_image`;
- **decoded bytes**, from the header before decoding: width x height x the peak bytes per pixel of the image's mode
  (its storage, the copy to NumPy and the RGB result; 16-bit and alpha modes cost more than 8-bit RGB) must fit
  `max_decode_bytes`. A JPEG over it is decoded at 1/2, 1/4 or 1/8 scale by libjpeg's DCT scaling (draft mode)
  until it fits, which is also far cheaper; any other format over it is a 413 `image_too_large`;
- the pixel cap and minimum side, as before; conversions of high bit depths stay in integers (no float64 copy);
- the number of decodes at once is bounded by the caller (`FacePipeline`), and large freed buffers go back to
  the operating system (glibc's mmap threshold is fixed, and the heap trimmed after a large decode), so a burst
  of hostile images leaves the process about where it started (`tests/embedder/test_decode_budget.py` measures it).

Coordinates reported for a draft-decoded JPEG are in the decoded image's pixels; `image_width`/`image_height`
say which (a client draws over the photo scaled to those).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from services.common.errors import FacegateError, PayloadTooLarge, Unprocessable
from services.contracts import images as limits

# PIL's own bomb guard (warn at 1x, raise at 2x): align it with ours so nothing slips between the two.
Image.MAX_IMAGE_PIXELS = limits.MAX_IMAGE_PIXELS

EXIF_ORIENTATION = 0x0112

# Signatures of the formats decoded (magic bytes -> Pillow format), and of image formats refused by name.
_ALLOWED = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))
_REFUSED = (
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"), (b"8BPS", "PSD"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"P1", "PNM"), (b"P2", "PNM"), (b"P3", "PNM"), (b"P4", "PNM"), (b"P5", "PNM"), (b"P6", "PNM"),
    (b"qoif", "QOI"), (b"DDS ", "DDS"), (b"\x0a\x05\x01", "PCX"), (b"icns", "ICNS"),
)  # fmt: skip
# Peak bytes per pixel while decoding and converting an image of each mode: Pillow's storage (RGB and every
# 3-4 channel mode use 4 bytes a pixel), the intermediate of the conversion, and the H x W x 3 result.
# Measured by tests/embedder/test_decode_budget.py: the burst's peak stays within 2 x this budget at 2 decodes.
_PEAK_BYTES_PER_PIXEL = {
    "1": 5, "L": 5, "P": 8, "RGB": 7, "CMYK": 12, "YCbCr": 12,
    "I;16": 10, "I;16B": 10, "I;16L": 10, "I;16N": 10,
}  # fmt: skip
_DEFAULT_PEAK = 24  # alpha (composited on white), 32-bit integer or float greys: several 4-byte copies
_WEBP_EXTRA = 10  # Pillow's WebP decoder holds libwebp's output and a bytes copy of it besides the image (measured)
MAX_DECODE_BYTES = 256 * 1024 * 1024  # a 12 Mpx phone JPEG needs ~84 MB; 24 Mpx and up is draft-decoded
LARGE_DECODE_BYTES = 32 * 1024 * 1024  # after a decode this large, freed memory is handed back at once

_LIBC = None
try:  # glibc only; elsewhere nothing to tune
    _libc_name = ctypes.util.find_library("c")
    if _libc_name:
        _LIBC = ctypes.CDLL(_libc_name)
        # M_MMAP_THRESHOLD (-3) set explicitly: buffers over 1 MB are mmapped and unmapped when freed. Left
        # dynamic, glibc raises the threshold after each large free, and later image buffers land in the heap
        # and arenas, where they stay after the burst.
        _LIBC.mallopt(-3, 1024 * 1024)
except (OSError, AttributeError):
    _LIBC = None


def release_memory() -> None:
    """Hand freed heap memory back to the operating system (glibc's malloc_trim)."""
    if _LIBC is not None:
        with contextlib.suppress(AttributeError):
            _LIBC.malloc_trim(0)


class EmptyBody(FacegateError):
    status_code = 400
    code = "empty_body"


class InvalidImage(Unprocessable):
    code = "invalid_image"


class ImageTooSmall(Unprocessable):
    code = "image_too_small"


class ImageTooLarge(PayloadTooLarge):
    code = "image_too_large"


class UnsupportedImageFormat(FacegateError):
    status_code = 415
    code = "unsupported_image_format"


def sniff_format(data: bytes) -> str:
    """The Pillow format to decode `data` with, from its signature alone: JPEG, PNG or WEBP."""
    for magic, fmt in _ALLOWED:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, name in _REFUSED:
        if data.startswith(magic):
            raise UnsupportedImageFormat(f"{name} images are not accepted; send JPEG, PNG or WebP")
    raise InvalidImage("not a JPEG, PNG or WebP image")


def peak_bytes(mode: str, width: int, height: int, fmt: str = "") -> int:
    extra = _WEBP_EXTRA if fmt == "WEBP" else 0
    return width * height * (_PEAK_BYTES_PER_PIXEL.get(mode, _DEFAULT_PEAK) + extra)


def _budget_mode(img: Image.Image) -> str:
    # a palette with transparency is composited like an alpha image
    return "PA" if img.mode == "P" and "transparency" in img.info else img.mode


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # H x W x 3 uint8, upright
    orientation_applied: bool
    format: str | None

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def _rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> H x W x 3 uint8. The common modes go straight to NumPy (Pillow stores RGB in 4 bytes a
    pixel, so a Pillow-side conversion costs more than the array it feeds)."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode == "L":
        return np.repeat(np.asarray(img, dtype=np.uint8)[:, :, None], 3, axis=2)
    if mode.startswith("I;16"):
        # integers only: the top byte of each 16-bit sample (a float64 copy cost 8 bytes a pixel, x4 temporaries)
        grey = (np.asarray(img) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(_to_rgb(img), dtype=np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Alpha is composited on white; >8-bit greys are rescaled, not clipped."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255) else 255.0
        if mode == "F":
            hi = max(float(arr.max(initial=1.0)), 1.0) if arr.max(initial=0) > 1.0 else 1.0
        grey = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if (mode in ("P", "PA") and "transparency" in img.info) or mode in ("PA", "LA", "La", "RGBA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _upright(img: Image.Image) -> tuple[Image.Image, int]:
    """Apply the EXIF orientation; a broken EXIF block means "as stored", not an unreadable image."""
    try:
        orientation = int(img.getexif().get(EXIF_ORIENTATION, 1))
        if not 2 <= orientation <= 8:
            return img, orientation  # exif_transpose would return a full copy for nothing
        return (ImageOps.exif_transpose(img) or img), orientation
    except Exception:
        return img, 1


def _fit_budget(img: Image.Image, fmt: str, max_decode_bytes: int) -> None:
    """Refuse (or, for a JPEG, scale down in the decoder) an image whose decoding would exceed the budget."""
    width, height = img.size
    mode = _budget_mode(img)
    need = peak_bytes(mode, width, height, fmt)
    if need <= max_decode_bytes:
        return
    if fmt == "JPEG":
        for scale in (2, 4, 8):  # libjpeg's DCT scaling: decoding at 1/scale costs about 1/scale^2
            if peak_bytes(mode, math.ceil(width / scale), math.ceil(height / scale)) <= max_decode_bytes:
                # draft picks the largest scale leaving at least this size: ask with floors to get 1/scale
                img.draft(img.mode, (width // scale, height // scale))
                return
    raise ImageTooLarge(
        f"image is {width}x{height} ({img.mode}): decoding it needs about {need // 2**20} MB, "
        f"the limit is {max_decode_bytes // 2**20} MB"
    )


def decode_image(
    data: bytes,
    *,
    max_pixels: int = limits.MAX_IMAGE_PIXELS,
    min_side: int = limits.MIN_IMAGE_SIDE,
    max_decode_bytes: int = MAX_DECODE_BYTES,
) -> DecodedImage:
    if not data:
        raise EmptyBody("the request carries no image")
    fmt = sniff_format(data)
    large = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])  # only the sniffed format's decoder
            width, height = img.size  # header only: nothing decoded yet
            if width * height > max_pixels:
                raise ImageTooLarge(f"image is {width}x{height}; the limit is {max_pixels} pixels")
            if min(width, height) < min_side:
                raise ImageTooSmall(f"image is {width}x{height}; each side must be at least {min_side} px")
            _fit_budget(img, fmt, max_decode_bytes)
            large = peak_bytes(_budget_mode(img), *img.size, fmt) >= LARGE_DECODE_BYTES
            img.load()  # animated PNG / WebP: the first frame
            upright, orientation = _upright(img)
            rgb = np.ascontiguousarray(_rgb_array(upright))
    except FacegateError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge("image exceeds the pixel limit") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        # OSError covers truncated files ("image file is truncated"); SyntaxError is PIL's parser failure. The
        # class name only: Pillow's messages can carry object reprs with memory addresses.
        raise InvalidImage(f"not a decodable {fmt} image ({type(exc).__name__})") from None
    except Exception as exc:  # a crafted file must never crash the worker
        raise InvalidImage(f"not a decodable image: {type(exc).__name__}") from None
    finally:
        if large:
            release_memory()
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidImage(f"unexpected decoded shape {rgb.shape}")
    return DecodedImage(
        rgb=rgb,
        orientation_applied=2 <= orientation <= 8,
        format=img.format,
    )
