"""Everything TensorFlow-specific: threads, device choice, frozen-graph loading and its batch-1 fix.

Models get a `FrozenGraphRuntime` (a callable [N, S, S, 3] float32 -> [N, D] float32) and never touch TF.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("facegate.embedder.tf")

_configured = False
_config_lock = threading.Lock()


def configure_tensorflow(*, intra_op_threads: int, inter_op_threads: int) -> list[str]:
    """Set thread pools and GPU memory growth once per process; returns the GPUs TF sees.

    Thread pools can only be set before TF initialises its runtime (MTCNN may have done so already, e.g.
    when the lead's calibration builds two pipelines); then the current setting stays and we log it.
    """
    global _configured
    import tensorflow as tf

    with _config_lock:
        gpus = tf.config.list_physical_devices("GPU")
        if _configured:
            return [g.name for g in gpus]
        try:
            if intra_op_threads:
                tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
            if inter_op_threads:
                tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
        except RuntimeError as exc:  # runtime already initialised
            log.warning("TF thread pools already fixed: %s", exc)
        for gpu in gpus:
            try:
                # Share the card with MTCNN and other processes instead of grabbing all memory up front.
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError as exc:
                log.warning("memory growth not set on %s: %s", gpu.name, exc)
        _configured = True
        return [g.name for g in gpus]


def pick_device(preference: str) -> str:
    """`/GPU:0` when TF sees a GPU (and it is not refused), else `/CPU:0`: one code path for both."""
    import tensorflow as tf

    if preference != "cpu" and tf.config.list_physical_devices("GPU"):
        return "/GPU:0"
    if preference == "gpu":
        log.warning("GPU requested but TensorFlow sees none; using the CPU")
    return "/CPU:0"


def _set_batch_dims(graph_def: Any, *, input_name: str) -> int:
    """Rewrite the batch-1 constants of a frozen graph so any batch size runs; returns edits made.

    FaceNet's export hard-codes batch 1 in the input placeholder and in Reshape shape constants ([1, -1]
    after the average pool, [1, 512] after the bottleneck batch norm).
    """
    import tensorflow as tf

    consts = {n.name: n for n in graph_def.node if n.op == "Const"}
    by_input: dict[str, list[Any]] = {}
    for node in graph_def.node:
        for inp in node.input:
            by_input.setdefault(inp.split(":")[0], []).append(node)
    edits = 0
    for node in graph_def.node:
        if node.name == input_name and node.op == "Placeholder" and "shape" in node.attr:
            dims = node.attr["shape"].shape.dim
            if dims and dims[0].size != -1:
                dims[0].size = -1
                edits += 1
        if node.op != "Reshape":
            continue
        shape_node = consts.get(node.input[1].split(":")[0])
        if shape_node is None:
            continue
        shape = tf.make_ndarray(shape_node.attr["value"].tensor)
        if shape.ndim != 1 or shape.size < 2 or shape[0] != 1:
            continue
        fixed = shape.copy()
        fixed[0] = -1
        if (fixed == -1).sum() > 1:
            # [1, -1] is a flatten; only one -1 is allowed, so take the width from the MatMul weights it feeds.
            width = _matmul_width(node.name, by_input, consts)
            if width is None or fixed.size != 2:
                log.warning("cannot free the batch dim of %s %s", node.name, shape.tolist())
                continue
            fixed[1] = width
        shape_node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(fixed, dtype=shape.dtype))
        edits += 1
    return edits


def _matmul_width(name: str, by_input: dict[str, list[Any]], consts: dict[str, Any]) -> int | None:
    for consumer in by_input.get(name, []):
        if consumer.op != "MatMul":
            continue
        weight = consts.get(consumer.input[1].split(":")[0])
        if weight is not None:
            dims = weight.attr["value"].tensor.tensor_shape.dim
            if len(dims) == 2:
                return int(dims[0].size)
    return None


class FrozenGraphRuntime:
    """A frozen GraphDef wrapped as a concrete function with a free batch dimension."""

    def __init__(
        self,
        path: Path,
        *,
        input_name: str,
        output_name: str,
        input_shape: tuple[int, int, int],
        device: str,
        extra_feeds: dict[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.device = device
        self._fn = self._load(path, input_name, output_name, input_shape, extra_feeds or {})

    def _load(
        self,
        path: Path,
        input_name: str,
        output_name: str,
        input_shape: tuple[int, int, int],
        extra_feeds: dict[str, Any],
    ) -> Callable[[Any], Any]:
        import tensorflow as tf

        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(path.read_bytes())
        node_names = {n.name for n in graph_def.node}
        edits = _set_batch_dims(graph_def, input_name=input_name)
        log.info("loaded %s: %d nodes, %d batch-1 edits", path.name, len(graph_def.node), edits)
        # A training-mode switch (phase_train) must be fed False; this export has none, but older ones do.
        feeds = {k: v for k, v in extra_feeds.items() if k.split(":")[0] in node_names}
        if "phase_train" in node_names and "phase_train:0" not in feeds:
            feeds["phase_train:0"] = False

        def _import() -> None:
            input_map = {name: tf.constant(value) for name, value in feeds.items()}
            tf.graph_util.import_graph_def(graph_def, input_map=input_map or None, name="")

        with tf.device(self.device):
            wrapped = tf.compat.v1.wrap_function(_import, [])
            fn = wrapped.prune(
                feeds=wrapped.graph.get_tensor_by_name(f"{input_name}:0"),
                fetches=wrapped.graph.get_tensor_by_name(f"{output_name}:0"),
            )
        self._input_shape = input_shape
        return fn  # type: ignore[no-any-return]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        if batch.ndim != 4 or tuple(batch.shape[1:]) != self._input_shape:
            raise ValueError(f"expected [N, {self._input_shape}] input, got {batch.shape}")
        with tf.device(self.device):
            out = self._fn(tf.convert_to_tensor(batch, dtype=tf.float32))
        return np.asarray(out, dtype=np.float32)
