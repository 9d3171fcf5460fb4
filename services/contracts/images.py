"""Limits on uploaded images, shared by the gateway (which forwards frames) and the embedder (which decodes)."""

MAX_IMAGE_BYTES = 10 * 1024 * 1024  # a phone photo is 2-6 MB; anything larger is refused with 413
MAX_IMAGE_PIXELS = 40_000_000  # decoded size cap: stops decompression bombs before allocation
MIN_IMAGE_SIDE = 32  # smaller than the smallest face we can detect
# The embedder decodes only these, recognised by their signature (services/embedder/imaging.py); the declared type
# must be one of them too (or generic, then sniffed). Every other decoder Pillow has stays out of reach.
ACCEPTED_CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp")
