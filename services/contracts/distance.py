"""The one distance rule of every decision: cosine distance, 1 - cos(a, b), in [0, 2]; an attendee's distance is the
minimum over their templates.

Where it is computed: the matcher in SQL (pgvector's `<=>` on the unit vectors it stores: its 1:1 endpoint and
exact search) and in its resident hnswlib copies (space "ip" on unit vectors: 1 - dot, the same number); the
gateway here, on the templates it caches in Redis for the 1:1 fast path, so a cached answer and the matcher's are
on one scale. The thresholds in `contracts/calibrations/` are on this scale.
"""

from __future__ import annotations

import numpy as np


def min_cosine_distance(templates: np.ndarray, probe: np.ndarray) -> float:
    """min over templates [n, dim] of 1 - cos(t, probe); vectors are re-normalised so stored rounding cannot bias
    it."""
    t = templates.astype(np.float64)
    p = probe.astype(np.float64)
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    p /= max(float(np.linalg.norm(p)), 1e-12)
    return float(np.min(1.0 - t @ p))
