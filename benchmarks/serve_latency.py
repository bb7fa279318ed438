"""Latency of the HTTP API: single-face images, sequentially and from 50 concurrent
clients, all on loopback.

Starts ``uvicorn fer_pipeline.serving.app:app`` on a free local port, serving the latest
model of ``--project`` or, by default, an untrained model of ``--model`` at
``--image-size`` in a throwaway project (latency does not depend on the weights). Prints
p50/p95 latency, requests/s and errors.

    python benchmarks/serve_latency.py                       # ViT-Tiny at 224 px
    python benchmarks/serve_latency.py --project .           # this project's latest export
    python benchmarks/serve_latency.py --detector yunet --yunet-model PATH
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import cv2
import httpx
import numpy as np
from _scratch import PROJECT, scratch_project
from kedro.io import Version

from fer_pipeline.datasets import BytesDataset
from fer_pipeline.faces import FaceDetector
from fer_pipeline.images import decode_image, encode_jpeg
from fer_pipeline.modelling.export import to_onnx
from fer_pipeline.modelling.models import ModelBundle, ModelSpec, build_model
from fer_pipeline.serving.local import local_server

FACES = PROJECT.parent / "shared/data/rafdb/basic/Image/aligned.zip"


def single_face_images(count: int, detector: FaceDetector) -> list[bytes]:
    """RAF-DB test faces with a 30 px border in which the detector finds exactly one face
    (Haar misses some), so every request has one face to classify."""
    images = []
    with zipfile.ZipFile(FACES) as archive:
        for i in range(1, 500):
            face = decode_image(archive.read(f"aligned/test_{i:04d}_aligned.jpg"))
            image = encode_jpeg(
                cv2.copyMakeBorder(
                    face, 30, 30, 30, 30, cv2.BORDER_CONSTANT, value=(120, 120, 120)
                ),
                90,
            )
            if len(detector.detect(decode_image(image))) == 1:
                images.append(image)
            if len(images) == count:
                return images
    raise SystemExit("not enough single-face images")


def throwaway_project(root: Path, model: str, size: int) -> Path:
    """A scratch project whose latest export (what the API serves) is an untrained
    ``model`` at ``size``."""
    scratch_project(root)
    net = build_model(model, size)
    spec = ModelSpec(name=model, image_size=size, mean=[0.5] * 3, std=[0.5] * 3)
    dataset = BytesDataset(str(root / "data/06_models/model.onnx"), version=Version(None, None))
    dataset.save(to_onnx(ModelBundle(spec=spec, state_dict=net.state_dict())))
    return root


def post(client: httpx.Client, url: str, image: bytes) -> tuple[float, bool, dict[str, float]]:
    """Latency in ms, whether the answer was a 200 with exactly one face, and the
    server's ``Server-Timing`` (stage -> ms)."""
    started = time.perf_counter()
    try:
        response = client.post(url, files={"file": ("face.jpg", image, "image/jpeg")})
        ok = response.status_code == 200 and len(response.json()["faces"]) == 1
        timing = response.headers["server-timing"]  # "decode;dur=0.31, detect;dur=3.9, ..."
        stages = {name: float(ms) for name, ms in (p.split(";dur=") for p in timing.split(", "))}
    except (httpx.HTTPError, KeyError, ValueError):
        ok, stages = False, {}
    return (time.perf_counter() - started) * 1000, ok, stages


def report(name: str, latencies: list[float], errors: int, seconds: float) -> None:
    p50, p95 = np.percentile(latencies, [50, 95])
    print(
        f"{name:<24} n={len(latencies):4d}  p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  "
        f"{len(latencies) / seconds:6.1f} req/s  errors {errors}"
    )


def print_stages(results: list[tuple[float, bool, dict[str, float]]]) -> None:
    """Median ms of each server stage (``Server-Timing``) and of the rest: HTTP, the
    multipart upload and the client."""
    timed = [r for r in results if r[2]]
    stages = {name: np.median([r[2][name] for r in timed]) for name in timed[0][2]}
    stages["http + client"] = np.median([r[0] - sum(r[2].values()) for r in timed])
    print("  median ms: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="serve this project's latest model")
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--requests", type=int, default=200, help="sequential requests")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--per-client", type=int, default=10)
    parser.add_argument("--detector", default="haar", choices=["haar", "yunet"])
    parser.add_argument("--yunet-model", help="OpenCV's YuNet ONNX file, for --detector yunet")
    args = parser.parse_args()
    detector = FaceDetector(args.detector, args.yunet_model)

    with tempfile.TemporaryDirectory(prefix="fer-serve-") as tmp:
        project = args.project or throwaway_project(Path(tmp), args.model, args.image_size)
        env = {
            "FER_DETECTOR": args.detector,
            "FER_YUNET_MODEL": str(Path(args.yunet_model).resolve()) if args.yunet_model else "",
        }
        with local_server(Path(project), env) as url:
            health = httpx.get(f"{url}/health", timeout=10).json()
            images = single_face_images(20, detector)
            print(
                f"serving {health['model']} at {health['image_size']} px on {os.cpu_count()} "
                f"cores, {args.detector} detector; single-face images "
                f"{decode_image(images[0]).shape[:2]}"
            )
            with httpx.Client(timeout=60) as client:
                for image in images[:5]:  # warm-up
                    post(client, f"{url}/predict", image)
                started = time.perf_counter()
                results = [
                    post(client, f"{url}/predict", images[i % len(images)])
                    for i in range(args.requests)
                ]
                seconds = time.perf_counter() - started
            report("sequential", [r[0] for r in results], sum(not r[1] for r in results), seconds)
            print_stages(results)

            results, lock = [], threading.Lock()

            def client_loop(k: int) -> None:
                with httpx.Client(timeout=120) as client:
                    for i in range(args.per_client):
                        outcome = post(client, f"{url}/predict", images[(k + i) % len(images)])
                        with lock:
                            results.append(outcome)

            threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(args.clients)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - started
            report(
                f"{args.clients} concurrent clients",
                [r[0] for r in results],
                sum(not r[1] for r in results),
                seconds,
            )


if __name__ == "__main__":
    main()
