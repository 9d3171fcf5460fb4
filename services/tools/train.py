"""`facegate train`: fit a triplet-loss adaptation head on top of a frozen model's embeddings.

    facegate train --faces ../shared/faces/calib [--model dlib-resnet-128] [--out data/heads/<model>.npz]

The frozen model embeds every photo once through the real pipeline (the `facegate calibrate` cache). Only half
of the fit identities (`fit.is_held_back` false, `fit.is_head_training` true) train the head, and a tenth of
those (by the same kind of name hash) are set aside to pick the epoch; the other half of the fit identities
calibrates every score that uses the head (a head's own training identities would understate its impostors'
tail), and the held-back identities are read only to report what the head does to them.

The head is y = normalise(x + x W + b), W and b starting at zero (the identity: the head can only move away
from the frozen model as far as the data pushes it, with an L2 pull back), trained with FaceNet's triplet
loss and semi-hard online mining: batches of P identities x K photos, every anchor-positive pair of a batch,
for each the nearest negative that is still farther than the positive (semi-hard), or the farthest negative
when none is. Distances are cosine distances; the margin defaults to the median genuine distance of the
training photos (a scale that suits both models).

It prints the triplet loss on held-back batches before and after, TAR at FMR 1e-3 and 1e-4 on the held-back
pairs, and FNIR at FPIR 0.003 in simulated 1:K events of held-back identities, before and after, and saves the
head as a versioned artefact (`services/embedder/models/head.py`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from services.embedder.models.head import EmbeddingHead
from services.tools import fit

VALIDATION_SHARE = 0.1


def is_validation(identity: str) -> bool:
    """A tenth of the fit identities, set aside to choose the epoch (never the held-back ones' job)."""
    h = int.from_bytes(hashlib.sha256(f"facegate-train-val:{identity}".encode()).digest()[:4], "big")
    return h / 2**32 < VALIDATION_SHARE


def _batches(labels: np.ndarray, rng: np.random.Generator, *, p: int, k: int) -> list[np.ndarray]:
    """One epoch of P x K batches: every identity with two or more photos once, up to K of its photos."""
    idents = [i for i, n in zip(*np.unique(labels, return_counts=True), strict=True) if n >= 2]
    by_ident = {i: np.flatnonzero(labels == i) for i in idents}
    order = rng.permutation(len(idents))
    out = []
    for s in range(0, len(order), p):
        chosen = [idents[j] for j in order[s : s + p]]
        if len(chosen) < 2:
            continue
        out.append(np.concatenate([rng.permutation(by_ident[i])[:k] for i in chosen]))
    return out


def semi_hard_triplet_loss(y: Any, labels: Any, margin: float) -> Any:
    """FaceNet's loss with semi-hard mining over one batch of L2-normalised rows (TensorFlow tensors)."""
    import tensorflow as tf

    d = 1.0 - tf.matmul(y, y, transpose_b=True)  # [B, B] cosine distance
    same = tf.equal(labels[:, None], labels[None, :])
    eye = tf.eye(tf.shape(y)[0], dtype=tf.bool)
    pos = tf.logical_and(same, tf.logical_not(eye))  # [a, p]
    neg = tf.logical_not(same)  # [a, n]
    d_ap = d[:, :, None]  # [a, p, 1]
    d_an = d[:, None, :]  # [a, 1, n]
    outside = tf.logical_and(neg[:, None, :], d_an > d_ap)  # [a, p, n] negatives farther than the positive
    inf = tf.constant(np.inf, dtype=d.dtype)
    semi = tf.reduce_min(tf.where(outside, d_an, inf), axis=2)  # nearest such negative
    hardest_far = tf.reduce_max(tf.where(neg, d, -inf), axis=1)[:, None]  # farthest negative, when none is
    chosen = tf.where(tf.reduce_any(outside, axis=2), semi, tf.broadcast_to(hardest_far, tf.shape(semi)))
    loss = tf.nn.relu(d[:, :] - chosen + margin)
    posf = tf.cast(pos, d.dtype)
    return tf.reduce_sum(loss * posf) / tf.maximum(tf.reduce_sum(posf), 1.0)


def triplet_loss(e: np.ndarray, labels: np.ndarray, margin: float, *, seed: int = 1, p: int = 32, k: int = 4) -> float:
    """The training objective on fixed batches of these (held-back) photos: the mean over batches of the
    semi-hard triplet loss. Same seed, same batches, so a head and the identity are compared on equal terms."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    _, idx = np.unique(labels, return_inverse=True)
    losses = []
    for _ in range(3):
        for b in _batches(labels, rng, p=p, k=k):
            losses.append(float(semi_hard_triplet_loss(tf.constant(e[b]), tf.constant(idx[b]), margin)))
    return float(np.mean(losses))


@dataclass
class TrainResult:
    head: EmbeddingHead
    margin: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0


def train_head(
    e: np.ndarray, labels: np.ndarray, model_id: str, *, epochs: int = 20, lr: float = 1e-4, l2: float = 1e-3,
    margin: float | None = None, p: int = 32, k: int = 4, seed: int = 0, log: bool = True, validate: bool = True,
) -> TrainResult:  # fmt: skip
    """Train on these embeddings (the fit identities); the epoch is chosen on the validation tenth of them
    (`validate=False`, or too few identities for a tenth: all train, and the last epoch is kept)."""
    import tensorflow as tf

    tf.random.set_seed(seed)
    rng = np.random.default_rng(seed)
    e = (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)
    val = np.asarray([validate and is_validation(str(x)) for x in labels])
    if val.all() or len(np.unique(labels[val])) < 10:  # tiny sets (tests): no validation split, keep the last epoch
        val = np.zeros(len(labels), dtype=bool)
    tr_e, tr_l, va_e, va_l = e[~val], labels[~val], e[val], labels[val]
    if margin is None:
        g, _ = fit.pair_distances(tr_e, tr_l)
        margin = float(np.median(g))
    dim = e.shape[1]
    w = tf.Variable(tf.zeros((dim, dim)), name="kernel")
    b = tf.Variable(tf.zeros((dim,)), name="bias")
    opt = tf.keras.optimizers.Adam(learning_rate=lr)
    _, tr_idx = np.unique(tr_l, return_inverse=True)

    def project(x: Any) -> Any:
        return tf.math.l2_normalize(x + tf.matmul(x, w) + b, axis=1)

    @tf.function(reduce_retracing=True)
    def step(x: Any, lab: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = semi_hard_triplet_loss(project(x), lab, margin)
            total = loss + l2 * (tf.reduce_sum(w * w) + tf.reduce_sum(b * b))
        grads = tape.gradient(total, [w, b])
        opt.apply_gradients(zip(grads, [w, b], strict=True))
        return loss

    def head() -> EmbeddingHead:
        return EmbeddingHead(model_id, w.numpy().copy(), b.numpy().copy())

    history: list[dict[str, float]] = []
    best = (np.inf, 0, head())
    if val.any():
        best = (triplet_loss(va_e, va_l, margin), 0, head())
        history.append({"epoch": 0, "train": float("nan"), "validation": best[0]})
    for epoch in range(1, epochs + 1):
        losses = [float(step(tf.constant(tr_e[bt]), tf.constant(tr_idx[bt]))) for bt in _batches(tr_l, rng, p=p, k=k)]
        row = {"epoch": epoch, "train": float(np.mean(losses))}
        if val.any():
            row["validation"] = triplet_loss(head().apply(va_e), va_l, margin)
            if row["validation"] < best[0]:
                best = (row["validation"], epoch, head())
        else:
            best = (row["train"], epoch, head())
        history.append(row)
        if log:
            print(f"  epoch {epoch}: train loss {row['train']:.4f}"
                  + (f", validation {row['validation']:.4f}" if "validation" in row else ""), flush=True)  # fmt: skip
    return TrainResult(best[2], margin, history, best[1])


def held_back_effect(
    e_all: np.ndarray, labels_all: np.ndarray, head: EmbeddingHead, margin: float, *, identify: bool = True
) -> dict[str, Any]:
    """Before/after on the held-back identities: triplet loss, TAR at FMR, and FNIR at FPIR 0.003 in simulated
    events (each side calibrated on the fit identities, as `facegate levers` does)."""
    from services.tools import levers

    held = fit.held_back_mask(labels_all)
    calib = ~held & ~fit.head_training_mask(labels_all)  # never the head's own training identities
    e_all = levers.normalise(e_all)
    after = head.apply(e_all)
    out: dict[str, Any] = {}
    for name, e in (("before", e_all), ("after", after)):
        row: dict[str, Any] = {"triplet_loss": triplet_loss(e[held], labels_all[held], margin)}
        row["tar_miss"] = {str(x): levers._rate(r) for x, r in levers.tar_at_fmr(e[held], labels_all[held]).items()}
        if identify:
            n_held = len(np.unique(labels_all[held]))
            cal = levers.calibrate_score(name, e[calib], labels_all[calib], n_held)
            k = max(s for s in levers.SIZES if s <= n_held - 100)
            r = levers.identify(e[held], labels_all[held], cal, k=k)
            row["identify"] = levers.result_json(name, r)
        out[name] = row
    return out


def run_train(*, faces: str, model_id: str, out: str | None, epochs: int, cache_dirs: list[str]) -> int:
    folder = Path(faces)
    from services.tools.levers import cached_faceset

    fs = cached_faceset(folder, model_id, [Path(c) for c in cache_dirs])
    ok = fs.has_face
    e, labels = fs.embeddings[ok], fs.labels[ok]
    held = fit.held_back_mask(labels)
    train_m = fit.head_training_mask(labels)
    fit_ids = len(np.unique(labels[train_m]))
    n_held = len(np.unique(labels[held]))
    print(
        f"{model_id}: training on {fit_ids} fit identities ({train_m.sum()} photos); the other "
        f"{len(np.unique(labels[~held & ~train_m]))} fit identities calibrate; "
        f"{n_held} held-back identities ({held.sum()} photos) only measured",
        flush=True,
    )
    t0 = time.perf_counter()
    res = train_head(e[train_m], labels[train_m], model_id, epochs=epochs)
    effect = held_back_effect(e, labels, res.head, res.margin)
    res.head.header.update({
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "trained_on": {"faces": folder.name, "fit_identities": fit_ids, "fit_photos": int(train_m.sum()),
                       "split": "fit.is_held_back false and fit.is_head_training true; a tenth by "
                                "train.is_validation picks the epoch; the other fit identities calibrate"},
        "training": {"loss": "triplet, semi-hard online mining", "margin": res.margin, "epochs": epochs,
                     "best_epoch": res.best_epoch, "seconds": round(time.perf_counter() - t0, 1)},
        "held_back": effect,
    })  # fmt: skip
    path = Path(out) if out else Path("data/heads") / f"{model_id}.npz"
    res.head.save(path)
    print(format_effect(effect))
    print(f"saved {path} (epoch {res.best_epoch} of {epochs}, margin {res.margin:.4f})")
    return 0


def format_effect(effect: dict[str, Any]) -> str:
    lines = ["held-back identities, before -> after the head:"]
    b, a = effect["before"], effect["after"]
    lines.append(f"  triplet loss {b['triplet_loss']:.4f} -> {a['triplet_loss']:.4f}")
    for x in ("0.001", "0.0001"):
        rb, ra = b["tar_miss"][x], a["tar_miss"][x]
        lines.append(
            f"  TAR at FMR {float(x):g}: {1 - rb['value']:.1%} -> {1 - ra['value']:.1%} "
            f"({rb['trials']:,} genuine pairs)"
        )
    if "identify" in b:
        ib, ia = b["identify"], a["identify"]
        fb, fa = ib["fnir_at_fpir"]["0.003"], ia["fnir_at_fpir"]["0.003"]
        lines.append(
            f"  K={ib['k']}: FNIR at FPIR 0.003 {fb['value']:.1%} ({fb['errors']:,}/{fb['trials']:,}) -> "
            f"{fa['value']:.1%} ({fa['errors']:,}/{fa['trials']:,}); calibrated FNIR {ib['fnir']['value']:.1%} -> "
            f"{ia['fnir']['value']:.1%} at FPIR {ib['fpir']['value']:.4f} -> {ia['fpir']['value']:.4f}"
        )
    return "\n".join(lines)
