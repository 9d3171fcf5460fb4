"""The dlib face ResNet port: the .dat reader, the TF network against dlib itself, batching, chip alignment."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from services.embedder.models.dlib_format import DlibFormatError, DlibNet, _Reader, parse_dlib_net, read_dlib_net

if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("face_recognition_models (dlib's weights) is not installed", allow_module_level=True)

from services.embedder.models.dlib_resnet import DlibResNet, _plan, package_model_path

MIN_CHIPS = 50
MAX_CHIPS = 60
MAX_PIXELS = 600_000  # HOG with upsampling is slow on the few multi-megapixel dev photos; skip those
TOLERANCE = 1e-4
ALIGN_FACES = 10


@pytest.fixture(scope="module")
def net() -> DlibNet:
    return read_dlib_net(package_model_path())


@pytest.fixture(scope="module")
def model(net: DlibNet) -> DlibResNet:
    return DlibResNet(net, batch_size=32)


# --- the reader -----------------------------------------------------------------------------------------------


def test_compact_integers_strings_floats() -> None:
    # control byte: low 4 bits = byte count, 0x80 = negative; magnitude little-endian; zero is 01 00
    assert _Reader(b"\x01\x00").int_() == 0
    assert _Reader(b"\x01\x96").int_() == 150
    assert _Reader(b"\x02\x80\x12").int_() == 4736
    assert _Reader(b"\x81\x11").int_() == -17
    assert _Reader(b"\x01\x05con_4").str_() == "con_4"  # length is a compact int too
    assert _Reader(b"10").bool_() and not _Reader(b"0").bool_()
    # float_details: mantissa 0xf59062, exponent -17 -> the red mean of the input layer
    assert _Reader(b"\x03\x62\x90\xf5\x81\x11").float_() == pytest.approx(122.782, abs=1e-4)
    # tensor version 2: dims then raw little-endian float32
    t = _Reader(b"\x01\x02\x01\x02\x01\x01\x01\x01\x01\x01" + np.array([1.5, -2.0], np.float32).tobytes()).tensor()
    assert t.shape == (2, 1, 1, 1) and t.ravel().tolist() == [1.5, -2.0]
    with pytest.raises(DlibFormatError):
        _Reader(b"\x01").int_()


def test_truncated_file_is_rejected() -> None:
    data = package_model_path().read_bytes()
    with pytest.raises(DlibFormatError):
        parse_dlib_net(data[: len(data) // 2])
    with pytest.raises(DlibFormatError):
        parse_dlib_net(data + b"\x00")


def test_layer_inventory(net: DlibNet) -> None:
    assert net.loss.kind == "loss_metric" and net.loss.attrs["margin"] == pytest.approx(0.04)
    counts = Counter(layer.kind for layer in net.layers)
    # 1 stem conv + 14 residual blocks x 2 convs; each conv has its affine; relus: stem + 2 per block
    assert counts == {
        "input": 1,
        "con": 29,
        "affine": 29,
        "relu": 29,
        "max_pool": 1,
        "tag_or_skip": 22,  # tag1 per block, plus tag2 and skip1 in the 4 down blocks
        "add_prev": 14,
        "avg_pool": 5,  # 4 shortcut pools + avg_pool_everything
        "fc": 1,
    }
    inp = net.layers[0]
    assert (inp.attrs["nr"], inp.attrs["nc"]) == (150, 150)
    means = (inp.attrs["avg_red"], inp.attrs["avg_green"], inp.attrs["avg_blue"])
    assert means == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    fc = net.layers[-1]
    assert fc.kind == "fc" and fc.params["weights"].shape == (256, 128) and "biases" not in fc.params
    assert net.layers[-2].kind == "avg_pool" and net.layers[-2].attrs["nr"] == 0  # avg_pool_everything


def test_conv_shapes_follow_the_architecture(net: DlibNet) -> None:
    expected = [(32, 3, 7, 7, 2, 0)]
    c_in = 32
    for c_out, n_res, down in [(32, 3, False), (64, 3, True), (128, 2, True), (256, 2, True), (256, 0, True)]:
        if down:
            expected += [(c_out, c_in, 3, 3, 2, 0), (c_out, c_out, 3, 3, 1, 1)]
        expected += [(c_out, c_out, 3, 3, 1, 1)] * (2 * n_res)
        c_in = c_out
    # layers come input-first, so the order is the forward order: alevel4 ... alevel0
    got = [
        (*layer.params["filters"].shape, layer.attrs["stride_y"], layer.attrs["padding_y"])
        for layer in net.layers
        if layer.kind == "con"
    ]
    assert got == expected
    for layer in net.layers:
        if layer.kind == "affine":
            assert layer.attrs["mode"] == 0 and layer.params["gamma"].shape == layer.params["beta"].shape
    stem_pool = next(layer for layer in net.layers if layer.kind == "max_pool")
    assert stem_pool.attrs == {"nr": 3, "nc": 3, "stride_y": 2, "stride_x": 2, "padding_y": 0, "padding_x": 0}


def test_plan_finds_the_residual_blocks(net: DlibNet) -> None:
    kinds = Counter(op.kind for op in _plan(net))
    assert kinds["res"] == 10 and kinds["res_down"] == 4


# --- the TF network -------------------------------------------------------------------------------------------


def _random_chips(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 150, 150, 3), dtype=np.uint8)


def test_batch_equals_single_and_any_n(model: DlibResNet) -> None:
    chips = _random_chips(7)
    model.batch_size = 32
    together = model.embed_raw(chips)
    one_by_one = np.concatenate([model.embed_raw(c[None]) for c in chips])
    model.batch_size = 3  # 3 + 3 + 1: a ragged last batch
    ragged = model.embed_raw(chips)
    model.batch_size = 32
    assert together.shape == (7, 128) and together.dtype == np.float32
    assert np.abs(together - one_by_one).max() < 1e-5
    assert np.abs(together - ragged).max() < 1e-5
    assert model.embed_raw(chips[:0]).shape == (0, 128)
    unit = model.embed(chips)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    assert np.allclose(unit, together / np.linalg.norm(together, axis=1, keepdims=True), atol=1e-6)


@pytest.fixture(scope="module")
def dev_faces(faces_dir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(photo, dlib's own 150x150 chip of its largest face) for up to MAX_CHIPS small dev photos."""
    try:
        import dlib
    except ImportError:
        pytest.skip("dlib (dlib-bin) is not importable: no oracle to compare the port with")
    from PIL import Image

    # located like the weights, without importing face_recognition_models (its __init__ needs pkg_resources,
    # which setuptools 81 and later no longer ship)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(package_model_path("shape_predictor_5_face_landmarks.dat")))
    faces: list[tuple[np.ndarray, np.ndarray]] = []
    for path in sorted((faces_dir / "dev").glob("*/*.jpg")):
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                continue
            rgb = np.asarray(im.convert("RGB"))
        dets = detector(rgb, 1)
        if not dets:
            continue
        shape = predictor(rgb, max(dets, key=lambda r: r.area()))
        faces.append((rgb, dlib.get_face_chip(rgb, shape, size=150, padding=0.25)))
        if len(faces) >= MAX_CHIPS:
            break
    return faces


def test_matches_dlib_on_dev_chips(model: DlibResNet, dev_faces: list[tuple[np.ndarray, np.ndarray]]) -> None:
    import dlib

    chips = [chip for _, chip in dev_faces]
    assert len(chips) >= MIN_CHIPS, f"only {len(chips)} faces found in the dev photos"
    rec = dlib.face_recognition_model_v1(str(package_model_path()))
    # the single-chip overload, num_jitters=0: no jittering, just the network's raw output
    oracle = np.stack([np.asarray(rec.compute_face_descriptor(chip), np.float32) for chip in chips])
    ours = model.embed_raw(np.stack(chips))
    diff = float(np.abs(ours - oracle).max())
    assert diff < TOLERANCE, f"max |TF - dlib| = {diff:.2e} over {len(chips)} chips"
    # dlib returns the raw fc output, not a unit vector
    assert not np.allclose(np.linalg.norm(oracle, axis=1), 1.0, atol=1e-3)


# --- alignment ------------------------------------------------------------------------------------------------


def test_similarity_transform_recovers_a_known_one() -> None:
    from services.embedder.models.dlib_align import similarity_transform

    src = np.array([[10, 20], [50, 22], [30, 45], [15, 60], [48, 62]], np.float64)
    a, s, t = 0.3, 1.7, np.array([5.0, -3.0])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    dst = src @ (s * rot).T + t
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], s * rot) and np.allclose(m[:, 2], t)


def test_align_dlib_chip_geometry() -> None:
    from services.embedder.models.dlib_align import CHIP_SIZE, DLIB_CHIP_TEMPLATE, align_dlib_chip

    t = DLIB_CHIP_TEMPLATE
    assert t.shape == (5, 2) and np.all((t > 0) & (t < CHIP_SIZE))
    assert t[0, 0] < t[1, 0] and t[3, 0] < t[4, 0]  # image-left eye / mouth corner first
    assert t[0, 1] < t[2, 1] < t[3, 1]  # eyes above the nose above the mouth
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(300, 300, 3), dtype=np.uint8)
    # landmarks exactly at the template: the chip is the image's top-left 150x150
    assert np.array_equal(align_dlib_chip(img, t), img[:CHIP_SIZE, :CHIP_SIZE])
    # the same face shifted by (40, 25): the chip follows it
    shifted = np.zeros((400, 400, 3), np.uint8)
    shifted[25:325, 40:340] = img
    chip = align_dlib_chip(shifted, t + np.array([40, 25], np.float32))
    assert chip.shape == (CHIP_SIZE, CHIP_SIZE, 3) and chip.dtype == np.uint8
    assert np.abs(chip.astype(int) - img[:CHIP_SIZE, :CHIP_SIZE]).max() <= 1


def test_mtcnn_chips_embed_like_dlib_chips(model: DlibResNet, dev_faces: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """MTCNN landmarks through the fitted template give nearly dlib's own descriptors (guards the constants)."""
    if importlib.util.find_spec("mtcnn") is None:
        pytest.skip("mtcnn is not installed")
    from services.embedder.detector import FaceDetector
    from services.embedder.models.dlib_align import align_dlib_chip

    detector = FaceDetector()
    detector.load()
    ours, theirs = [], []
    for rgb, dlib_chip in dev_faces[:ALIGN_FACES]:
        found = detector.detect(rgb)
        if found:
            ours.append(align_dlib_chip(rgb, found[0].landmarks))
            theirs.append(dlib_chip)
    assert len(ours) >= ALIGN_FACES - 1
    dist = 1.0 - np.sum(model.embed(np.stack(ours)) * model.embed(np.stack(theirs)), axis=1)
    # same photo, two alignments: ~0.005 typical on the dev set; genuine pairs average ~0.05, EER threshold ~0.10
    assert np.median(dist) < 0.02 and dist.max() < 0.08, dist.round(4).tolist()
