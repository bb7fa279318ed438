"""What each form of a rank's training images costs (``training_images``): decoded once,
kept encoded, or streamed from the shards. For each, in a fresh process on the
project's newest training split: the memory the images hold once set up, the process's
peak, the set-up time, and the data path's images/s over one epoch of batches drawn as
training draws them (index and decode; no model, no augmentation).

    python benchmarks/streaming.py --size 56 --threads 1

Measured on this project's 2-core machine: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import psutil
import torch
from _scratch import PROJECT

FORMS = ("decoded", "encoded", "streamed")


def measure(form: str, size: int, batch: int) -> dict[str, float]:
    """One form, in this process: memory, set-up time and an epoch's images/s."""
    from fer_pipeline.data.shards import Shards
    from fer_pipeline.data.versions import latest_split
    from fer_pipeline.modelling.distributed import Ranks
    from fer_pipeline.modelling.engine import training_images
    from fer_pipeline.modelling.tensors import EncodedImages, StreamedImages, encoded_gb

    train = Shards(latest_split(PROJECT, "train"))
    rows = train.read(["label"], positions=True)
    encoded = encoded_gb(train, rows)
    budget = {"decoded": 1e3, "encoded": encoded * 1.01, "streamed": encoded / 10}[form]  # GB
    before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    images = training_images(train, rows, size, budget, Ranks())
    setup = time.perf_counter() - started
    kind = {"decoded": torch.Tensor, "encoded": EncodedImages, "streamed": StreamedImages}[form]
    if not isinstance(images, kind):  # e.g. encoded no smaller than decoded at a tiny --size
        raise SystemExit(f"{form}: training_images gave {type(images).__name__} at {size} px")
    held = psutil.Process().memory_info().rss - before
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
    if isinstance(images, StreamedImages):
        order = images.localise(order, torch.Generator().manual_seed(0))
    started = time.perf_counter()
    for start in range(0, len(order), batch):
        images[order[start : start + batch]]
    epoch = time.perf_counter() - started
    return {
        "images": len(rows),
        "held_gb": held / 1e9,
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "setup_s": setup,
        "images_per_second": len(rows) / epoch,
        "row_groups_read": getattr(images, "groups_read", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=56, help="side the images are decoded at")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="decoding threads")
    parser.add_argument("--form", choices=FORMS, help=argparse.SUPPRESS)  # one, in a child
    args = parser.parse_args()
    if args.form:
        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.form, args.size, args.batch_size)))
        return
    print(
        "| form | images | held in memory | process peak | set-up | data path, images/s "
        "| row groups read |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    for form in FORMS:
        command = [sys.executable, __file__, "--form", form, "--size", str(args.size)]
        command += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode:
            sys.exit(f"{form}: {result.stderr[-2000:]}")
        f = json.loads(result.stdout.splitlines()[-1])
        print(
            f"| {form} | {f['images']:,} | {f['held_gb']:.2f} GB | {f['peak_gb']:.2f} GB "
            f"| {f['setup_s']:.0f} s | {f['images_per_second']:.0f} | {f['row_groups_read']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
