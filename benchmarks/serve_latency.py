"""Latency of serving: p50/p95 per model, in process and through the HTTP API, and the
API's overhead, in one run on loopback.

For each model (an untrained ViT-Tiny at 224 px in fp32 and int8, calibrated on real
faces: latency does not depend on the weights; and the latest fp32 and int8 exports of
``--project``, by default this project's, e.g. the ``cpu`` recipe's model), on the same
single-face images, one request at a time:

- in process: decode + detect + classify (``FaceRecogniser`` on ``OnnxClassifier``);
- API: ``POST /predict`` to ``uvicorn --factory fer_pipeline.serving.app:create_app``
  serving the model (``FER_ONNX_MODEL``), from a lean keep-alive client, in blocks
  alternating with the in-process blocks on the same images (see ``alternating``);
- overhead: API p50 / in-process p50 (target <= 1.25).

Then ``--clients`` concurrent clients on the first model, each retrying a 503 (the
server is full) after its ``Retry-After``. Prints a table.

    python benchmarks/serve_latency.py
    python benchmarks/serve_latency.py --project . --detector haar --clients 0
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import tempfile
import threading
import time
import urllib.parse
import uuid
import zipfile
from pathlib import Path

import cv2
import httpx
import numpy as np
from _scratch import PROJECT, RAF_FACES, scratch_project

from fer_pipeline.data.images import decode_image, encode_jpeg
from fer_pipeline.data.versions import latest_complete
from fer_pipeline.modelling.export import model_inputs, to_int8, to_onnx
from fer_pipeline.modelling.models import ModelBundle, ModelSpec, build_model
from fer_pipeline.runtime.classifier import OnnxClassifier
from fer_pipeline.runtime.faces import FaceDetector, FaceRecogniser
from fer_pipeline.serving.local import local_server


def single_face_images(count: int, detector: FaceDetector) -> list[bytes]:
    """RAF-DB test faces with a 30 px border in which the detector finds exactly one face
    (Haar misses some), so every request has one face to classify."""
    images = []
    with zipfile.ZipFile(RAF_FACES) as archive:
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


def untrained_models(folder: Path, model: str, size: int) -> dict[str, Path]:
    """An untrained ``model`` at ``size`` as fp32 ONNX and int8 (calibrated on 64 real
    RAF-DB training faces), written to ``folder``."""
    spec = ModelSpec(name=model, image_size=size, mean=[0.5] * 3, std=[0.5] * 3)
    bundle = ModelBundle(spec=spec, state_dict=build_model(model, size).state_dict())
    with zipfile.ZipFile(RAF_FACES) as archive:
        faces = [archive.read(f"aligned/train_{i:05d}_aligned.jpg") for i in range(1, 65)]
    fp32 = to_onnx(bundle)
    paths = {f"{model} fp32": folder / "fp32.onnx", f"{model} int8": folder / "int8.onnx"}
    paths[f"{model} fp32"].write_bytes(fp32)
    paths[f"{model} int8"].write_bytes(to_int8(fp32, model_inputs(bundle, faces).numpy()))
    return paths


def project_exports(project: Path) -> dict[str, Path]:
    """The latest fp32 and int8 exports of ``project`` (either may be missing)."""
    found = {}
    for precision, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        latest = latest_complete(project / "data/06_models" / name)
        if latest:
            spec = OnnxClassifier(latest).spec
            found[f"{spec['name']} {spec['image_size']} px {precision} (project)"] = latest
    return found


def post(
    client: httpx.Client, url: str, image: bytes, busy: list | None = None
) -> tuple[float, bool, dict[str, float]]:
    """Latency in ms, whether the answer was a 200 with exactly one face, and the
    server's ``Server-Timing`` (stage -> ms). With ``busy`` (a list), a 503 is retried
    after its ``Retry-After``, as a client should, and noted in ``busy``."""
    started = time.perf_counter()
    try:
        response = client.post(url, files={"file": ("face.jpg", image, "image/jpeg")})
        while busy is not None and response.status_code == 503:
            busy.append(1)
            time.sleep(float(response.headers["retry-after"]))
            response = client.post(url, files={"file": ("face.jpg", image, "image/jpeg")})
        ok = response.status_code == 200 and len(response.json()["faces"]) == 1
        timing = response.headers["server-timing"]  # "decode;dur=0.31, detect;dur=3.9, ..."
        stages = {name: float(ms) for name, ms in (p.split(";dur=") for p in timing.split(", "))}
    except (httpx.HTTPError, KeyError, ValueError):
        ok, stages = False, {}
    return (time.perf_counter() - started) * 1000, ok, stages


def percentiles(latencies: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(latencies, [50, 95])
    return float(p50), float(p95)


def multipart(image: bytes) -> tuple[bytes, str]:
    """The request body of a browser's upload of ``image`` as ``file``, and its type."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="face.jpg"'
            f"\r\nContent-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def alternating(
    url: str, recogniser: FaceRecogniser, images: list[bytes], count: int, block: int = 20
) -> tuple[list[float], list[float], list[dict[str, float]], int]:
    """ms in process (decode + detect + classify) and ms of ``POST /predict`` over a
    kept-alive connection, on the same images, in alternating blocks of ``block``
    requests, each back to back: the two see the machine in the same state (this shared
    2-vCPU machine changes speed every few seconds), each with its threads warm (ONNX
    Runtime's threads spin between runs that follow each other closely, and sleep
    after a pause). The first 3 of each block, where one side hands the cores to the
    other, are not counted. Also the server's stages and the errors. A lean client
    (http.client, the bodies built beforehand): the figure is the server's overhead,
    not an HTTP library's."""
    bodies = [multipart(image) for image in images]
    connection = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=60)
    local, served, stages, errors = [], [], [], 0
    for first in range(0, count, block - 3):
        for i in range(first, first + block):
            started = time.perf_counter()
            recogniser.recognise(decode_image(images[i % len(images)]))
            if i - first >= 3:
                local.append((time.perf_counter() - started) * 1000)
        for i in range(first, first + block):
            body, kind = bodies[i % len(bodies)]
            started = time.perf_counter()
            connection.request("POST", "/predict", body, {"Content-Type": kind})
            response = connection.getresponse()
            answer = json.loads(response.read())
            if i - first < 3:
                continue
            served.append((time.perf_counter() - started) * 1000)
            errors += response.status != 200 or len(answer["faces"]) != 1
            timing = response.getheader("server-timing")  # "decode;dur=0.31, ..."
            stages.append({k: float(v) for k, v in (p.split(";dur=") for p in timing.split(", "))})
    connection.close()
    return local, served, stages, errors


def print_stages(served: list[float], stages: list[dict[str, float]]) -> None:
    """Median ms of each server stage (``Server-Timing``) and of the rest: HTTP, the
    multipart upload, the framework and the client."""
    medians = {name: np.median([s[name] for s in stages]) for name in stages[0]}
    medians["http + framework"] = np.median([t - sum(s.values()) for t, s in zip(served, stages)])
    print("  API median ms: " + ", ".join(f"{k} {v:.1f}" for k, v in medians.items()))


def concurrent(url: str, images: list[bytes], clients: int, per_client: int) -> None:
    results, busy, lock = [], [], threading.Lock()

    def client_loop(k: int) -> None:
        with httpx.Client(timeout=120) as client:
            for i in range(per_client):
                outcome = post(client, f"{url}/predict", images[(k + i) % len(images)], busy)
                with lock:
                    results.append(outcome)

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    p50, p95 = percentiles([r[0] for r in results])
    errors = sum(not r[1] for r in results)
    print(
        f"{clients} concurrent clients x {per_client}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
        f"{len(results) / seconds:.1f} requests/s, errors {errors}, 503 answers (busy, "
        f"retried after Retry-After) {len(busy)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=PROJECT, help="its latest exports")
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--requests", type=int, default=200, help="sequential, per model")
    parser.add_argument("--clients", type=int, default=50, help="0: skip")
    parser.add_argument("--per-client", type=int, default=10)
    parser.add_argument("--detector", default="yunet", choices=["yunet", "haar"])
    args = parser.parse_args()
    detector = FaceDetector(args.detector)
    images = single_face_images(20, detector)
    print(
        f"{os.cpu_count()} cores, {args.detector} detector, single-face images "
        f"{decode_image(images[0]).shape[:2]}, {args.requests} sequential requests a model"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="fer-serve-") as tmp:
        models = {
            **untrained_models(Path(tmp), args.model, args.image_size),
            **project_exports(args.project),
        }
        (Path(tmp) / "project").mkdir()
        scratch = scratch_project(Path(tmp) / "project")
        for number, (name, path) in enumerate(models.items()):
            recogniser = FaceRecogniser(OnnxClassifier(path), detector)
            env = {"FER_ONNX_MODEL": str(path), "FER_DETECTOR": args.detector}
            with local_server(scratch, env) as url:
                local, served, stages, errors = alternating(url, recogniser, images, args.requests)
                print(f"{name}: API errors {errors}")
                print_stages(served, stages)
                if number == 0 and args.clients:
                    concurrent(url, images, args.clients, args.per_client)
            local, served = percentiles(local), percentiles(served)
            rows.append((name, *local, *served, served[0] / local[0]))
    print(
        "\n| model | in process p50 / p95 ms | API p50 / p95 ms | overhead (API p50 / "
        "in-process p50) |\n| --- | --- | --- | --- |"
    )
    for name, local50, local95, api50, api95, ratio in rows:
        figures = f"{local50:.1f} / {local95:.1f} | {api50:.1f} / {api95:.1f} | {ratio:.2f}"
        print(f"| {name} | {figures} |")


if __name__ == "__main__":
    main()
