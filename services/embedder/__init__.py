"""Embedder service: frames in, aligned faces, quality codes and embeddings out."""

import os

# TensorFlow's C++ runtime prints banners (oneDNN, CPU features) at every start, which read as errors on a
# newcomer's first screen. Keep its INFO and WARNING lines out unless FACEGATE_VERBOSE=1 (`facegate run
# --verbose`); errors still show, and an explicit TF_CPP_MIN_LOG_LEVEL wins. Set here, before anything of the
# package can import TensorFlow.
if os.environ.get("FACEGATE_VERBOSE") != "1":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
