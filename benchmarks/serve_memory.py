"""The API's memory under concurrent 40-megapixel uploads, and how long a one-face
request waits meanwhile.

Starts ``uvicorn --factory fer_pipeline.serving.app:create_app`` with its default
settings serving the project's latest export (``--project``, default this project),
builds a 7280 x 5440 (39.6-megapixel) PNG under the 10 MB upload limit with real RAF-DB
faces on it, sends it from ``--uploads`` clients at once, and samples the server's
resident memory every 10 ms. While they run, one-face requests (light images: a worker
of their own) are sent one after another. Prints the server's memory before and at its
peak, the ceiling the settings imply, each upload's status and seconds, and the one-face
latencies.

    python benchmarks/serve_memory.py
"""

from __future__ import annotations

import argparse
import threading
import time
import urllib.parse
import zipfile
from pathlib import Path

import cv2
import httpx
import numpy as np
import psutil
from _scratch import PROJECT, RAF_FACES

from fer_pipeline.data.images import decode_image, encode_jpeg, encode_png
from fer_pipeline.serving.local import local_server
from fer_pipeline.serving.service import LIGHT_WORKERS
from fer_pipeline.serving.settings import ServingSettings

DECODED_MB = 7280 * 5440 * 3 / 1e6


def big_photo() -> bytes:
    """A 39.6-megapixel PNG: a smooth background with 12 real faces of 150-600 px."""
    height, width = 5440, 7280
    ys = np.linspace(60, 190, height, dtype=np.float32)[:, None, None]
    canvas = np.broadcast_to(ys, (height, width, 3)).astype(np.uint8).copy()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(RAF_FACES) as archive:
        for i in range(12):
            face = decode_image(archive.read(f"aligned/test_{i + 1:04d}_aligned.jpg"))
            side = int(rng.integers(150, 601))
            x, y = (i % 4) * 1800 + 200, (i // 4) * 1800 + 200
            canvas[y : y + side, x : x + side] = cv2.resize(face, (side, side))
    return encode_png(canvas)


def server_process(url: str) -> psutil.Process:
    port = str(urllib.parse.urlsplit(url).port)
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "uvicorn" in " ".join(command) and port in command:
            return process
    raise SystemExit(f"no uvicorn process on port {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=PROJECT)
    parser.add_argument("--uploads", type=int, default=8)
    args = parser.parse_args()
    photo = big_photo()
    with zipfile.ZipFile(RAF_FACES) as archive:
        face = decode_image(archive.read("aligned/test_0001_aligned.jpg"))
    small = encode_jpeg(cv2.copyMakeBorder(face, 30, 30, 30, 30, cv2.BORDER_CONSTANT), 90)
    settings = ServingSettings()
    upload_mb = settings.max_upload_bytes / 1e6
    light_mb = LIGHT_WORKERS * (settings.light_pixels * 3 * 2 / 1e6 + 50)
    ceiling = (
        settings.workers * (DECODED_MB * 2 + 150)
        + 2 * (settings.workers + settings.queue) * upload_mb  # decoding and header lanes
        + settings.max_uploads * 1  # bodies being received: ~1 MB each in memory
        + light_mb
        + (LIGHT_WORKERS + settings.queue) * upload_mb
    )
    print(
        f"upload: {len(photo) / 1e6:.1f} MB PNG, 7280 x 5440 ({DECODED_MB:.0f} MB decoded); "
        f"{args.uploads} at once; workers {settings.workers}, queue {settings.queue}"
    )
    with local_server(args.project) as url:
        process = server_process(url)
        with httpx.Client(timeout=60) as client:  # warm: the model and detector loaded
            client.post(f"{url}/predict", files={"file": ("f.jpg", small, "image/jpeg")})
        before = process.memory_info().rss / 1e6
        peak, sampling, uploads, quick = before, True, [], []

        def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, process.memory_info().rss / 1e6)
                time.sleep(0.01)

        def upload() -> None:
            started = time.perf_counter()
            with httpx.Client(timeout=300) as client:
                files = {"file": ("big.png", photo, "image/png")}
                response = client.post(f"{url}/predict", files=files)
            faces = len(response.json().get("faces", [])) if response.status_code == 200 else 0
            uploads.append((response.status_code, time.perf_counter() - started, faces))

        sampler = threading.Thread(target=sample)
        sampler.start()
        threads = [threading.Thread(target=upload) for _ in range(args.uploads)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # the uploads are in
        with httpx.Client(timeout=60) as client:
            while any(thread.is_alive() for thread in threads):
                started = time.perf_counter()
                response = client.post(
                    f"{url}/predict", files={"file": ("f.jpg", small, "image/jpeg")}
                )
                quick.append((response.status_code, time.perf_counter() - started))
        for thread in threads:
            thread.join()
        sampling = False
        sampler.join()
    statuses = sorted({status for status, _, _ in uploads})
    seconds = sorted(round(s, 1) for _, s, _ in uploads)
    rise = peak - before
    print(f"server memory: {before:.0f} MB before, {peak:.0f} MB at the peak (+{rise:.0f})")
    print(
        f"ceiling from the settings: workers x (2 x {DECODED_MB:.0f} MB decoded + 150 MB "
        "detection) + 2 x (workers + queue) x upload limit (decoding and header lanes) + "
        "max uploads x 1 MB (bodies being received), + the light lane's worker and queue "
        f"= {ceiling:.0f} MB above the model"
    )
    print(f"uploads: status {statuses}, seconds {seconds}, faces {uploads[0][2]}")
    ok = [s for status, s in quick if status == 200]
    refused = sum(status == 503 for status, _ in quick)
    if ok:
        print(
            f"one-face requests meanwhile: {len(quick)}, p50 {np.median(ok) * 1000:.0f} ms, "
            f"max {max(ok) * 1000:.0f} ms, 503 (busy) {refused}"
        )


if __name__ == "__main__":
    main()
