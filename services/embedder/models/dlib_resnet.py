"""dlib's 128-d face ResNet (`dlib_face_recognition_resnet_model_v1.dat`) rebuilt in TensorFlow from its own weights.

The network (dlib's examples/dnn_face_recognition_ex.cpp):

    loss_metric<fc_no_bias<128, avg_pool_everything<
        ares_down<256, ares<256, ares<256, ares_down<256,
        ares<128, ares<128, ares_down<128,
        ares<64, ares<64, ares<64, ares_down<64,
        ares<32, ares<32, ares<32,
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>>>>>>>>>>>

    block<N,stride>  = affine<con<N,3,3,1,1, relu<affine<con<N,3,3,stride,stride, X>>>>>
    ares<N>(X)       = relu(block<N,1>(X) + X)                              (add_prev1 / tag1)
    ares_down<N>(X)  = relu(add_prev2(avg_pool<2,2,2,2>(X), block<N,2>(X)))  (tag2 / skip1 / tag1)

The `.dat` file carries every layer's parameters and hyper-parameters but not the tag ids that wire the residual
branches (see dlib_format.py), so `_plan` matches the parsed layer sequence against exactly these two block shapes
and refuses anything else. Semantics that matter for equality with dlib:

* input: (pixel - channel mean) / 256, means read from the file (122.782, 117.001, 104.298).
* con_ and the pools pad symmetrically by the amount stored in the file (0 for every strided layer here, 1 for
  the 3x3/1 convolutions), i.e. out = (in + 2p - k) // s + 1, no TF "SAME" asymmetry.
* affine_ in CONV_MODE: x * gamma[c] + beta[c] (a frozen batch norm).
* add_prev_: the output takes the max of both inputs' dims and each input is added where it exists (zero
  elsewhere, anchored top-left). That zero-pads the channel growth of the shortcut, and in the 256-channel
  down blocks also the spatial size: avg_pool 2x2/2 of 8x8 gives 4x4 but the stride-2 3x3 conv gives 3x3 (and
  4x4 -> 2x2 vs 1x1 in the last block), so the block output is zero-extended on the bottom/right.
* fc_ without bias: out = in @ W with W [256, 128]; the raw output is the descriptor (no normalisation).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.contracts.models import DLIB_RESNET_128
from services.embedder.models.base import ChipGeometry, FaceModel
from services.embedder.models.dlib_align import CHIP_PADDING, DLIB_CHIP_TEMPLATE, DLIB_CHIP_WEIGHTS
from services.embedder.models.dlib_format import DlibLayer, DlibNet, read_dlib_net
from services.embedder.models.tf_runtime import pick_device

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150
DESCRIPTOR_DIM = 128


def package_model_path(filename: str = MODEL_FILE) -> Path:
    """The weights shipped by the `face_recognition_models` wheel, found without importing its pkg_resources."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("face_recognition_models is not installed (pip install face_recognition_models)")
    for root in spec.submodule_search_locations:
        path = Path(root) / "models" / filename
        if path.is_file():
            return path
    raise FileNotFoundError(f"{filename} not found in face_recognition_models")


@dataclass
class _Op:
    """One step of the forward plan; `kind` is a dlib layer kind or a block."""

    kind: str
    layer: DlibLayer | None = None
    body: list[DlibLayer] = field(default_factory=list)  # block: con, affine, relu, con, affine
    pool: DlibLayer | None = None  # down block: the shortcut's avg_pool


def _kinds(layers: list[DlibLayer]) -> list[str]:
    return [layer.kind for layer in layers]


def _plan(net: DlibNet) -> list[_Op]:
    """Turn the parsed layer list into ops, checking it has the face-ResNet's shape."""
    layers = net.layers
    if not layers or layers[0].kind != "input":
        raise ValueError("the network must start with its input layer")
    ops: list[_Op] = [_Op("input", layers[0])]
    body_kinds = ["con", "affine", "relu", "con", "affine"]
    i = 1
    while i < len(layers):
        kind = layers[i].kind
        if kind == "tag_or_skip":
            # tag1, then block<N,stride> on it
            body = layers[i + 1 : i + 6]
            if _kinds(body) != body_kinds:
                raise ValueError(f"layer {i}: expected a residual block after a tag, got {_kinds(body)}")
            rest = _kinds(layers[i + 6 : i + 11])
            if rest[:2] == ["add_prev", "relu"]:  # ares: add_prev1 (block + tag1), relu
                ops.append(_Op("res", body=body))
                i += 8
            elif rest == ["tag_or_skip", "tag_or_skip", "avg_pool", "add_prev", "relu"]:
                # ares_down: tag2 (block out), skip1 (back to tag1), avg_pool, add_prev2, relu
                ops.append(_Op("res_down", body=body, pool=layers[i + 8]))
                i += 11
            else:
                raise ValueError(f"layer {i + 6}: unknown residual tail {rest}")
        elif kind in ("con", "affine", "relu", "max_pool", "avg_pool", "fc"):
            ops.append(_Op(kind, layers[i]))
            i += 1
        else:
            raise ValueError(f"layer {i}: unexpected {kind!r} outside a residual block")
    return ops


def _out_size(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


class _Graph:
    """Builds the TF computation from the plan; holds the weights as TF constants."""

    def __init__(self, ops: list[_Op]) -> None:
        import tensorflow as tf

        self.tf = tf
        self.ops = ops
        inp = ops[0].layer
        assert inp is not None
        self.size = int(inp.attrs["nr"])
        self.means = tf.constant(
            [inp.attrs["avg_red"], inp.attrs["avg_green"], inp.attrs["avg_blue"]], dtype=tf.float32
        )
        self.consts: dict[int, dict[str, Any]] = {}
        for op in ops:
            for layer in [op.layer, *op.body]:
                if layer is None or id(layer) in self.consts:
                    continue
                if layer.kind == "con":
                    # dlib [out, in, kh, kw] -> TF [kh, kw, in, out]; both compute a cross-correlation
                    w = np.transpose(layer.params["filters"], (2, 3, 1, 0))
                    self.consts[id(layer)] = {
                        "w": tf.constant(w),
                        "b": tf.constant(layer.params["biases"]),
                    }
                elif layer.kind == "affine":
                    if layer.attrs.get("mode", 0) != 0:
                        raise ValueError("only CONV_MODE affine layers are supported")
                    self.consts[id(layer)] = {
                        "g": tf.constant(layer.params["gamma"]),
                        "b": tf.constant(layer.params["beta"]),
                    }
                elif layer.kind == "fc":
                    self.consts[id(layer)] = {"w": tf.constant(layer.params["weights"])}
                    if "biases" in layer.params:
                        self.consts[id(layer)]["b"] = tf.constant(layer.params["biases"])

    def _layer(self, layer: DlibLayer, x: Any) -> Any:
        tf = self.tf
        a = layer.attrs
        if layer.kind == "con":
            c = self.consts[id(layer)]
            py, px = int(a["padding_y"]), int(a["padding_x"])
            pad = "VALID" if py == px == 0 else [[0, 0], [py, py], [px, px], [0, 0]]
            y = tf.nn.conv2d(x, c["w"], strides=[1, a["stride_y"], a["stride_x"], 1], padding=pad)
            return tf.nn.bias_add(y, c["b"])
        if layer.kind == "affine":
            c = self.consts[id(layer)]
            return x * c["g"] + c["b"]
        if layer.kind == "relu":
            return tf.nn.relu(x)
        if layer.kind in ("max_pool", "avg_pool"):
            if a["nr"] == 0 and a["nc"] == 0:  # avg_pool_everything
                return tf.reduce_mean(x, axis=[1, 2], keepdims=True)
            if a["padding_y"] or a["padding_x"]:
                raise ValueError("padded pooling is not needed by this model and not implemented")
            pool = tf.nn.max_pool2d if layer.kind == "max_pool" else tf.nn.avg_pool2d
            return pool(x, ksize=[a["nr"], a["nc"]], strides=[a["stride_y"], a["stride_x"]], padding="VALID")
        if layer.kind == "fc":
            c = self.consts[id(layer)]
            y = tf.matmul(tf.reshape(x, [-1, c["w"].shape[0]]), c["w"])
            return y + c["b"] if "b" in c else y
        raise ValueError(f"cannot run {layer.kind!r}")

    def _add_prev(self, a: Any, b: Any) -> Any:
        """dlib's add_prev_: max of both shapes, each input zero-extended at the bottom/right/last channels."""
        tf = self.tf
        ha, wa, ca = a.shape[1], a.shape[2], a.shape[3]
        hb, wb, cb = b.shape[1], b.shape[2], b.shape[3]
        h, w, c = max(ha, hb), max(wa, wb), max(ca, cb)

        def grow(t: Any, th: int, tw: int, tc: int) -> Any:
            if (th, tw, tc) == (h, w, c):
                return t
            return tf.pad(t, [[0, 0], [0, h - th], [0, w - tw], [0, c - tc]])

        return grow(a, ha, wa, ca) + grow(b, hb, wb, cb)

    def __call__(self, chips: Any) -> Any:
        """float32 RGB [N, S, S, 3] in 0..255 -> raw descriptors [N, 128]."""
        tf = self.tf
        x = (chips - self.means) / 256.0
        for op in self.ops[1:]:
            if op.kind in ("res", "res_down"):
                h = x
                for layer in op.body:
                    h = self._layer(layer, h)
                shortcut = x if op.kind == "res" else self._layer(op.pool, x)  # type: ignore[arg-type]
                x = tf.nn.relu(self._add_prev(shortcut, h))
            else:
                assert op.layer is not None
                x = self._layer(op.layer, x)
        return x


class DlibResNet:
    """dlib's face descriptor network on TensorFlow: 150x150 RGB chips in, 128-d descriptors out.

    `embed_raw` matches `dlib.face_recognition_model_v1.compute_face_descriptor(chip)`: the raw fc output, not
    normalised (norms 1.3-1.7 on the dev faces); `embed` L2-normalises for cosine matching. Runs on the GPU
    when TF sees one, otherwise the CPU.
    """

    def __init__(self, net: DlibNet, *, batch_size: int = 32, device: str | None = None) -> None:
        import tensorflow as tf

        self.net = net
        self.batch_size = max(1, int(batch_size))
        self.device = device
        self.plan = _plan(net)
        self._graph = _Graph(self.plan)
        size = self._graph.size
        if size != CHIP_SIZE:
            raise ValueError(f"expected a {CHIP_SIZE}px input layer, the file says {size}")
        spec = tf.TensorSpec([None, size, size, 3], tf.float32)
        self._fn = tf.function(self._graph.__call__, input_signature=[spec], jit_compile=False)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> DlibResNet:
        return cls(read_dlib_net(path), **kwargs)

    @classmethod
    def from_package(cls, **kwargs: Any) -> DlibResNet:
        """Load the weights from the installed `face_recognition_models` package."""
        return cls.from_file(package_model_path(), **kwargs)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        x = tf.convert_to_tensor(batch, dtype=tf.float32)
        if self.device:
            with tf.device(self.device):
                return self._fn(x).numpy()
        return self._fn(x).numpy()

    def embed_raw(self, chips: np.ndarray) -> np.ndarray:
        """uint8 (or float 0..255) RGB chips [N, 150, 150, 3] -> dlib's raw descriptors [N, 128] float32."""
        chips = np.asarray(chips)
        if chips.ndim == 3:
            chips = chips[None]
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"expected chips [N, {CHIP_SIZE}, {CHIP_SIZE}, 3], got {chips.shape}")
        if len(chips) == 0:
            return np.zeros((0, DESCRIPTOR_DIM), np.float32)
        out = [
            self._run(chips[i : i + self.batch_size].astype(np.float32)) for i in range(0, len(chips), self.batch_size)
        ]
        return np.concatenate(out).astype(np.float32, copy=False)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """Like `embed_raw`, L2-normalised (unit vectors: cosine distance = 1 - dot)."""
        raw = self.embed_raw(chips)
        return (raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class DlibResNetModel(FaceModel):
    """The port as one of the embedder's models: MTCNN landmarks -> dlib chip geometry -> 128-d unit vectors."""

    descriptor = DLIB_RESNET_128
    geometry = ChipGeometry(
        size=CHIP_SIZE,
        template=DLIB_CHIP_TEMPLATE,
        crop_margin=CHIP_PADDING * 2,  # the crop mode's nearest equivalent of get_face_chip's padding
        align="landmarks",
        weights=DLIB_CHIP_WEIGHTS,
    )

    def __init__(self, *, device: str = "auto") -> None:
        self._device_pref = device
        self._net: DlibResNet | None = None

    def load(self) -> None:
        self._net = DlibResNet.from_package(device=pick_device(self._device_pref))

    @property
    def device(self) -> str:
        return (self._net.device or "cpu") if self._net else "unloaded"

    def preprocessing_for(self, align: str) -> str:
        if align == "crop":
            return "MTCNN box + 50% margin resized to 150x150 RGB (not the geometry it was trained on)"
        return self.descriptor.preprocessing

    def preprocess(self, chips: np.ndarray) -> np.ndarray:
        return chips  # the network's input layer subtracts dlib's channel means and scales by 1/256 itself

    def forward(self, batch: np.ndarray) -> np.ndarray:
        if self._net is None:
            raise RuntimeError("model not loaded")
        return self._net.embed_raw(batch)
