"""The recognition service behind the API: the model and detector, and the lanes of
worker threads that decode, search and classify uploads."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import HTTPException

from fer_pipeline.data.images import Header, NotAnImage, TooManyPixels, decode_image, read_header
from fer_pipeline.runtime.faces import FaceRecogniser
from fer_pipeline.serving.settings import ServingSettings

LIGHT_WORKERS = 1
"""Workers of the lane for images up to ``ServingSettings.light_pixels``."""


class RecognitionService:
    """Recognises the faces of uploads with ``recogniser`` (``version``: the model's, for
    ``/health``), within the limits of ``settings``.

    Decoding and detection (OpenCV releases the GIL) run in bounded pools outside the
    model lock (one classification at a time: it uses every core), so a heavy image
    holds one worker and not the requests behind it, and images up to ``light_pixels``
    have a worker of their own: they never queue behind large ones. Headers are parsed
    in a lane of their own, off the event loop: Pillow walks a PNG's chunks in Python,
    and 800,000 of them take seconds. A lane whose workers and queue are full answers
    503."""

    def __init__(self, recogniser: FaceRecogniser, version: str, settings: ServingSettings):
        self.recogniser, self.version, self.settings = recogniser, version, settings
        self._model_lock = threading.Lock()
        self._lanes = {
            name: (
                ThreadPoolExecutor(workers, thread_name_prefix=f"fer-{name}"),
                threading.BoundedSemaphore(workers + settings.queue),
            )
            for name, workers in (
                ("large", settings.workers),
                ("light", LIGHT_WORKERS),
                ("header", settings.workers),
            )
        }

    def health(self) -> dict[str, Any]:
        """The model being served."""
        spec = self.recogniser.predictor.spec
        return {
            "status": "ok",
            "model": spec["name"],
            "version": self.version,
            "image_size": spec["image_size"],
            "classes": spec["classes"],
            "val_accuracy": spec.get("val_accuracy"),
            "temperature": self.recogniser.predictor.temperature,
        }

    async def predict(
        self, data: bytes, filename: str | None, detect: bool
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """The answer of ``/predict`` for the upload ``data``, and the seconds spent
        decoding, detecting and classifying."""
        header = await self._in_lane("header", _header, data, filename, self.settings.max_pixels)
        light = header.width * header.height <= self.settings.light_pixels
        timings: dict[str, float] = {}
        lane = "light" if light else "large"
        answer = await self._in_lane(lane, self._recognise, data, header, detect, timings)
        return answer, timings

    def close(self) -> None:
        for pool, _ in self._lanes.values():
            pool.shutdown(wait=False, cancel_futures=True)

    def _recognise(
        self, data: bytes, header: Header, detect: bool, timings: dict[str, float]
    ) -> dict[str, Any]:
        """Decode (EXIF orientation applied), find and classify; in a pool worker."""
        started = time.perf_counter()
        try:
            pixels = decode_image(data, header)
        except ValueError as exc:
            raise HTTPException(422, f"the image cannot be decoded: {exc}") from exc
        timings["decode"] = time.perf_counter() - started
        boxes = self.recogniser.find(pixels, detect, timings)
        kept = boxes[: self.settings.max_faces]
        with self._model_lock:
            faces = self.recogniser.classify(pixels, kept, timings, detect)
        height, width = pixels.shape[:2]
        answer = {"width": width, "height": height, "faces": faces}
        if len(boxes) > len(kept):
            answer |= {"faces_found": len(boxes), "faces_capped": True}
        return answer

    async def _in_lane(self, name: str, work: Any, *args: Any) -> Any:
        """``work(*args)`` in a worker of lane ``name``; 503 when its workers and queue
        are taken."""
        pool, slots = self._lanes[name]
        if not slots.acquire(blocking=False):
            raise HTTPException(503, "busy: try again shortly", headers={"Retry-After": "1"})
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, work, *args)
        finally:
            slots.release()


def _header(data: bytes, filename: str | None, max_pixels: int) -> Header:
    """The image's header, before anything is decoded: 415 when ``data`` is no image,
    422 when its header is broken, 413 when it claims over ``max_pixels`` (a
    decompression bomb)."""
    try:
        header = read_header(data)
    except TooManyPixels as exc:  # Pillow's own ceiling, far above ours
        raise HTTPException(413, f"the image claims too many pixels ({exc})") from None
    except NotAnImage as exc:
        raise HTTPException(415, f"not an image: {filename}") from exc
    except ValueError as exc:
        raise HTTPException(422, f"the image cannot be decoded: {exc}") from exc
    if header.width * header.height > max_pixels:
        raise HTTPException(
            413,
            f"the image has {header.width * header.height:,} pixels; the limit is {max_pixels:,}",
        )
    return header
