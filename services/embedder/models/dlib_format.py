"""Reader for dlib's DNN serialization (the `.dat` files `dlib::serialize(net)` writes), no dlib needed.

Format facts, checked against dlib's sources (serialize.h, dnn/core.h, dnn/layers.h, dnn/input.h, dnn/tensor.h,
dnn/loss.h) and against `dlib_face_recognition_resnet_model_v1.dat` byte by byte:

* Integers (int, long, size_t): one control byte whose low 4 bits are the byte count and whose bit 0x80 is the
  sign, then the magnitude little-endian. Zero is written as one byte 0 (control 0x01, payload 0x00).
* bool: one ASCII char, '1' or '0'.
* std::string: its length as an integer, then the raw bytes.
* float/double scalars: `float_details`, i.e. an int64 mantissa and an int16 exponent, each a compact integer;
  value = mantissa * 2**exponent (exponents 32000/32001/32002 mean +inf/-inf/nan).
* resizable_tensor: an int version, then num_samples, k, nr, nc; version 2 (what this file has) stores the
  values as raw 4-byte little-endian IEEE floats, version 1 as float_details each.
* alias_tensor: version 1 then num_samples, k, nr, nc (a view into the layer's `params`, no data).
* The network nests: add_loss_layer = version, loss details, subnet. add_layer = version, subnet, layer details,
  3 bools, x_grad, cached_output and (version 2) params_grad. The add_layer sitting on the input layer is a
  specialisation: version, input layer, details, 3 bools, x_grad, cached_output, grad_final and (version 3)
  the sample expansion factor. add_tag_layer and add_skip_layer both write only `version 1` and their subnet:
  their tag ids are NOT in the file, nor is add_prev_'s tag, so the wiring of a residual net has to come from
  its C++ type (see dlib_resnet.py); here they come out as `tag_or_skip` records.

So the stream is: every wrapper's version from the outside in, the input layer, then each layer's details from
the inside out. `read_dlib_net` returns the layers in forward order (input first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

INPUT_LAYERS = ("input_rgb_image_sized", "input_rgb_image")


class DlibFormatError(ValueError):
    """The bytes do not follow dlib's serialization as this reader understands it."""


@dataclass
class DlibLayer:
    """One layer record: `kind` is the serialized version string without its version suffix."""

    kind: str  # input, con, affine, relu, max_pool, avg_pool, add_prev, fc, tag_or_skip, loss_metric
    version: str  # the exact version string in the file, e.g. "con_4" ("" for tag/skip wrappers)
    attrs: dict[str, Any] = field(default_factory=dict)  # ints/floats: strides, paddings, means, ...
    params: dict[str, np.ndarray] = field(default_factory=dict)  # float32 arrays, dlib layouts

    def __repr__(self) -> str:
        shapes = {k: tuple(v.shape) for k, v in self.params.items()}
        return f"DlibLayer({self.kind!r}, {self.attrs}, {shapes})"


@dataclass
class DlibNet:
    loss: DlibLayer
    layers: list[DlibLayer]  # forward order: input first, last layer feeds the loss


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of data at byte {self.pos} (wanted {n} bytes)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int_(self) -> int:
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F
        if size > 8 or ctrl & 0x70:
            raise DlibFormatError(f"bad integer control byte 0x{ctrl:02x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if ctrl & 0x80 else value

    def bool_(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def str_(self) -> str:
        n = self.int_()
        if not 0 <= n < 1 << 16:
            raise DlibFormatError(f"implausible string length {n} at byte {self.pos}")
        return self._take(n).decode("ascii")

    def float_(self) -> float:
        mantissa = self.int_()
        exponent = self.int_()
        if exponent == 32000:
            return float("inf")
        if exponent == 32001:
            return float("-inf")
        if exponent == 32002:
            return float("nan")
        return float(np.ldexp(float(mantissa), exponent))

    def tensor(self) -> np.ndarray:
        version = self.int_()
        dims = tuple(self.int_() for _ in range(4))
        if min(dims) < 0:
            raise DlibFormatError(f"negative tensor dims {dims}")
        count = int(np.prod(dims))
        if version == 2:
            raw = self._take(4 * count)
            values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif version == 1:
            values = np.array([self.float_() for _ in range(count)], dtype=np.float32)
        else:
            raise DlibFormatError(f"unknown tensor version {version} at byte {self.pos}")
        return values.reshape(dims)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.int_()
        if version != 1:
            raise DlibFormatError(f"unknown alias_tensor version {version}")
        return tuple(self.int_() for _ in range(4))  # type: ignore[return-value]

    def peek_string_prefix(self, prefixes: tuple[str, ...]) -> bool:
        """Whether a string starting with one of `prefixes` comes next (without consuming it)."""
        save = self.pos
        try:
            n = self.int_()
            if not 0 < n < 256:
                return False
            head = self.data[self.pos : self.pos + n]
            return any(head.startswith(p.encode()) for p in prefixes)
        except DlibFormatError:
            return False
        finally:
            self.pos = save


def _split(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """Cut a layer's flat `params` into its alias_tensor views, in order (dlib aliases them back to back)."""
    flat = params.reshape(-1)
    need = sum(int(np.prod(s)) for s in shapes)
    if need != flat.size:
        raise DlibFormatError(f"params hold {flat.size} values, aliases want {need}")
    out, offset = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(flat[offset : offset + n].reshape(s).copy())
        offset += n
    return out


def _read_details(r: _Reader) -> DlibLayer:
    version = r.str_()
    if version == "con_4":
        params = r.tensor()
        attrs: dict[str, Any] = {
            "num_filters": r.int_(),
            "nr": r.int_(),
            "nc": r.int_(),
            "stride_y": r.int_(),
            "stride_x": r.int_(),
            "padding_y": r.int_(),
            "padding_x": r.int_(),
        }
        fshape = r.alias_tensor()
        bshape = r.alias_tensor()
        attrs.update(
            learning_rate_multiplier=r.float_(),
            weight_decay_multiplier=r.float_(),
            bias_learning_rate_multiplier=r.float_(),
            bias_weight_decay_multiplier=r.float_(),
        )
        # filters: [num_filters, k_in, nr, nc]; biases: [1, num_filters] (alias shapes from the file)
        filters, biases = _split(params, fshape, bshape)
        return DlibLayer("con", version, attrs, {"filters": filters, "biases": biases.reshape(-1)})
    if version == "affine_":
        params = r.tensor()
        gshape = r.alias_tensor()
        bshape = r.alias_tensor()
        mode = r.int_()  # dlib's layer_mode: CONV_MODE = 0 (per channel), FC_MODE = 1 (per element)
        gamma, beta = _split(params, gshape, bshape)
        return DlibLayer("affine", version, {"mode": mode}, {"gamma": gamma.reshape(-1), "beta": beta.reshape(-1)})
    if version.startswith("relu_"):
        return DlibLayer("relu", version)
    if version in ("max_pool_2", "avg_pool_2"):
        pool: dict[str, Any] = {
            "nr": r.int_(),
            "nc": r.int_(),
            "stride_y": r.int_(),
            "stride_x": r.int_(),
            "padding_y": r.int_(),
            "padding_x": r.int_(),
        }
        return DlibLayer(version[:-2], version, pool)
    if version == "add_prev_":
        return DlibLayer("add_prev", version)
    if version == "fc_2":
        num_outputs = r.int_()
        num_inputs = r.int_()
        params = r.tensor()
        wshape = r.alias_tensor()
        bshape = r.alias_tensor()
        bias_mode = r.int_()  # FC_HAS_BIAS = 0, FC_NO_BIAS = 1
        fc: dict[str, Any] = {
            "num_outputs": num_outputs,
            "num_inputs": num_inputs,
            "bias_mode": bias_mode,
            "learning_rate_multiplier": r.float_(),
            "weight_decay_multiplier": r.float_(),
            "bias_learning_rate_multiplier": r.float_(),
            "bias_weight_decay_multiplier": r.float_(),
        }
        shapes = [wshape] if bias_mode == 1 else [wshape, bshape]
        parts = _split(params, *shapes)
        # weights: [num_inputs, num_outputs] (fc_ computes out = in @ weights)
        out: dict[str, np.ndarray] = {"weights": parts[0].reshape(num_inputs, num_outputs)}
        if bias_mode != 1:
            out["biases"] = parts[1].reshape(-1)
        return DlibLayer("fc", version, fc, out)
    raise DlibFormatError(f"unsupported layer version string {version!r} at byte {r.pos}")


def _read_input(r: _Reader) -> DlibLayer:
    version = r.str_()
    if version == "input_rgb_image_sized":
        attrs = {
            "avg_red": r.float_(),
            "avg_green": r.float_(),
            "avg_blue": r.float_(),
            "nr": r.int_(),
            "nc": r.int_(),
        }
        return DlibLayer("input", version, attrs)
    raise DlibFormatError(f"unsupported input layer {version!r}")


def _read_loss(r: _Reader) -> DlibLayer:
    version = r.str_()
    if version == "loss_metric_2":
        return DlibLayer("loss_metric", version, {"margin": r.float_(), "dist_thresh": r.float_()})
    if version == "loss_metric_":
        return DlibLayer("loss_metric", version, {"margin": 0.04, "dist_thresh": 0.6})  # hard-coded pre-v2
    raise DlibFormatError(f"unsupported loss layer {version!r}")


def parse_dlib_net(data: bytes) -> DlibNet:
    """Parse a serialized `add_loss_layer<..., add_layer<...>>` network into layers in forward order."""
    r = _Reader(data)
    if r.int_() != 1:
        raise DlibFormatError("not an add_loss_layer (version != 1)")
    loss = _read_loss(r)

    # Outside-in: each wrapper writes its version before its subnet; the input layer's name ends the run.
    wrappers: list[int] = []
    while not r.peek_string_prefix(INPUT_LAYERS):
        v = r.int_()
        if v not in (1, 2, 3):
            raise DlibFormatError(f"unexpected wrapper version {v} at byte {r.pos}")
        wrappers.append(v)
        if len(wrappers) > 10_000:
            raise DlibFormatError("no input layer found")
    if not wrappers or wrappers[-1] < 2:
        raise DlibFormatError("the innermost wrapper must be the add_layer on the input layer")

    layers = [_read_input(r)]
    # Inside-out: the add_layer on the input layer first, then every wrapper back to the top.
    for depth, v in enumerate(reversed(wrappers)):
        if depth > 0 and v == 1:
            # add_tag_layer / add_skip_layer: version 1 and their subnet, nothing after it.
            layers.append(DlibLayer("tag_or_skip", ""))
            continue
        layer = _read_details(r)
        for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, get_output..._disabled
            r.bool_()
        r.tensor()  # x_grad
        r.tensor()  # cached_output
        if depth == 0:
            r.tensor()  # grad_final
            if v >= 3:
                layers[0].attrs["sample_expansion_factor"] = r.int_()
        elif v >= 2:
            r.tensor()  # params_grad
        layers.append(layer)
    if r.pos != len(data):
        raise DlibFormatError(f"{len(data) - r.pos} trailing bytes after the network")
    return DlibNet(loss=loss, layers=layers)


def read_dlib_net(path: str | Path) -> DlibNet:
    return parse_dlib_net(Path(path).read_bytes())
