"""Image bytes -> upright RGB uint8 array, with every limit checked before pixels are allocated."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from services.common.errors import FacegateError, PayloadTooLarge, Unprocessable
from services.contracts import images as limits

# PIL's own bomb guard (warn at 1x, raise at 2x): align it with ours so nothing slips between the two.
Image.MAX_IMAGE_PIXELS = limits.MAX_IMAGE_PIXELS

EXIF_ORIENTATION = 0x0112


class EmptyBody(FacegateError):
    status_code = 400
    code = "empty_body"


class InvalidImage(Unprocessable):
    code = "invalid_image"


class ImageTooSmall(Unprocessable):
    code = "image_too_small"


class ImageTooLarge(PayloadTooLarge):
    code = "image_too_large"


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


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Alpha is composited on white; >8-bit greys are rescaled, not clipped."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
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
        return (ImageOps.exif_transpose(img) or img), orientation
    except Exception:
        return img, 1


def decode_image(
    data: bytes,
    *,
    max_pixels: int = limits.MAX_IMAGE_PIXELS,
    min_side: int = limits.MIN_IMAGE_SIDE,
) -> DecodedImage:
    if not data:
        raise EmptyBody("the request carries no image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size  # header only: nothing decoded yet
            if width * height > max_pixels:
                raise ImageTooLarge(f"image is {width}x{height}; the limit is {max_pixels} pixels")
            if min(width, height) < min_side:
                raise ImageTooSmall(f"image is {width}x{height}; each side must be at least {min_side} px")
            img.load()  # multi-frame formats (GIF, TIFF) decode their first frame
            upright, orientation = _upright(img)
            rgb = np.ascontiguousarray(np.asarray(_to_rgb(upright), dtype=np.uint8))
    except FacegateError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image exceeds the pixel limit: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        # OSError covers truncated files ("image file is truncated"); SyntaxError is PIL's parser failure.
        raise InvalidImage(f"not a decodable image: {exc}") from None
    except Exception as exc:  # a crafted file must never crash the worker
        raise InvalidImage(f"not a decodable image: {type(exc).__name__}") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidImage(f"unexpected decoded shape {rgb.shape}")
    return DecodedImage(
        rgb=rgb,
        orientation_applied=2 <= orientation <= 8,
        format=img.format,
    )
