"""Data processing and training setup at scale: time and memory against the number of faces.

For each AffectNet release given (made by ``benchmarks/scale_data.py``; none: the real
FER+ and RAF-DB alone), in a throwaway copy of the project:

1. ``kedro run --pipelines data_processing``: wall time, faces per second, and peak
   memory (the sum of the resident memory of the Kedro process and its workers,
   sampled every 0.2 s; and the largest single process);
2. the training setup of each rank (``rank_data``: read the labels, decode its share of
   train and val at ``--storage-size``) with 1 and 2 ranks: the memory it holds once
   done (resident memory after minus before) and the peak of the rank's process.

It prints a table, writes it as JSON and a plot of time and memory against the number
of faces (``--out``), and compares the planted near-duplicates of each release
(``planted.csv``) with what the run found.

    python benchmarks/scale_data.py --faces 150000 --out /tmp/affectnet_150k
    python benchmarks/scale.py --release none --release /tmp/affectnet_150k --out /tmp/scale

Measured on this project's 2-core machine: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import yaml
from _scratch import SHARED_DATA, scratch_project

from fer_pipeline.data.near_duplicates import components
from fer_pipeline.data.versions import latest_complete, latest_split
from fer_pipeline.pipelines.splitting.nodes import _near_pairs

RANK_SETUP = """
    import resource, sys
    import psutil
    from fer_pipeline.modelling.config import TrainConfig
    from fer_pipeline.modelling.distributed import Ranks
    from fer_pipeline.modelling.engine import rank_data
    from fer_pipeline.data.shards import Shards
    train, val, size, rank, world = sys.argv[1:]
    config = TrainConfig(image_size=int(size), storage_size=int(size))
    before = psutil.Process().memory_info().rss
    data = rank_data(Shards(train), Shards(val), config, Ranks(int(rank), int(world)))
    after = psutil.Process().memory_info().rss
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(len(data[0]), before, after, peak)
"""


def watch(command: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Runs ``command``; its wall time and the peak of its process tree's memory."""
    started = time.perf_counter()
    log = cwd / "run.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=output)
        root, tree_peak = psutil.Process(process.pid), 0
        while process.poll() is None:
            try:
                processes = [root, *root.children(recursive=True)]
                tree = sum(p.memory_info().rss for p in processes if p.is_running())
            except psutil.Error:
                tree = 0
            tree_peak = max(tree_peak, tree)
            time.sleep(0.2)
    if process.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{log.read_text()[-4000:]}")
    return {"seconds": time.perf_counter() - started, "tree_peak_gb": tree_peak / 1e9}


def rank_memory(root: Path, size: int) -> dict[str, float]:
    """Peak memory of one rank's training setup, with 1 and with 2 ranks."""
    train, val = latest_split(root, "train"), latest_split(root, "val")
    figures = {}
    for world in (1, 2):
        code = textwrap.dedent(RANK_SETUP)
        args = [str(train), str(val), str(size), "0", str(world)]
        result = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
        )
        images, before, after, peak = map(int, result.stdout.split()[-4:])
        figures[f"rank_images_{world}"] = images
        figures[f"rank_data_gb_{world}"] = (after - before) / 1e9  # what rank_data holds
        figures[f"rank_peak_gb_{world}"] = peak / 1e9
    return figures


def near_duplicates(release: Path | None, root: Path) -> dict[str, object]:
    """How the planted pairs of ``planted.csv`` fare: for each distance ``k``, with the
    hashes alone and with the thumbnails compared as the run's setting does, how many
    planted near copies are in one group (recall) and how many pairs the search links
    (the generator reuses each real face, flipped and recoloured, so some are
    look-alikes, not errors); and with the run's own setting, how many planted pairs
    straddle the final splits."""
    if release is None or not (release / "planted.csv").exists():
        return {}
    planted = pd.read_csv(release / "planted.csv", dtype=str)
    faces = pd.read_parquet(latest_complete(root / "data/03_primary/faces_all.parquet"))
    faces = faces.drop_duplicates("pixel_hash").reset_index(drop=True)
    key = faces["source"] + ":" + faces["source_id"]
    where = {k: i for i, k in enumerate(key)}
    a = planted["a_source"] + ":" + planted["a_id"]
    b = planted["b_source"] + ":" + planted["b_id"]
    near = (planted["kind"] == "near").to_numpy()
    pairs = [(where.get(x), where.get(y)) for x, y in zip(a, b)]
    kept = np.array([i is not None and j is not None for i, j in pairs])
    correlation = yaml.safe_load((root / "conf/base/parameters_splitting.yml").read_text())[
        "splitting"
    ]["near_duplicate_correlation"]
    sweep = {}
    for k in (0, 2, 4, 6, 8, 10):
        for verified in (None, correlation):
            found, _ = _near_pairs(faces, k, verified)
            group = components(len(faces), found)
            hit = np.array([ok and group[i] == group[j] for (i, j), ok in zip(pairs, kept)])
            sweep[f"{k} bits" + (f", thumbnails >= {verified}" if verified else "")] = {
                "near_recall": float(hit[near & kept].mean()) if (near & kept).any() else None,
                "pairs": len(found),
                "largest_group": int(np.bincount(group).max()),
            }
    index = pd.read_parquet(latest_complete(root / "data/03_primary/split_index.parquet"))
    split = dict(zip(index["source"] + ":" + index["source_id"], index["split"]))
    straddle = sum(x in split and y in split and split[x] != split[y] for x, y in zip(a, b))
    return {
        "planted_pairs": len(planted),
        "planted_pairs_in_splits": int(sum(x in split and y in split for x, y in zip(a, b))),
        "planted_pairs_across_splits": int(straddle),
        "near_duplicate_sweep": sweep,
    }


def measure(release: Path | None, size: int, keep: Path | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fer-scale-", dir=keep) as tmp:
        root = scratch_project(Path(tmp), SHARED_DATA)
        if release is not None:
            catalog = {
                "affectnet.release": {
                    "type": "fer_pipeline.datasets.AffectNetRelease",
                    "path": str(release.resolve()),
                    "automatic": (release / "automatically_annotated.csv").exists(),
                }
            }
            (root / "conf/local/catalog.yml").write_text(yaml.safe_dump(catalog))
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
            "KEDRO_DISABLE_TELEMETRY": "1",
        }
        run = watch(["kedro", "run", "--pipelines", "data_processing"], root, env)
        print(f"data_processing: {json.dumps(run)}", flush=True)  # the rest takes a while
        report = json.loads(
            latest_complete(root / "data/08_reporting/data_report.json").read_text()
        )
        faces = sum(report["sizes"].values())
        listed = sum(
            len(pd.read_parquet(f, columns=["source"]))
            for f in (root / "data/02_intermediate").glob("*/faces/*/faces/*.parquet")
        )
        return {
            "release": str(release) if release else "real data only",
            "faces_ingested": listed,
            "faces_in_splits": faces,
            **run,
            "faces_per_second": listed / run["seconds"],
            "seconds_per_100k": 1e5 * run["seconds"] / listed,
            **rank_memory(root, size),
            **near_duplicates(release, root),
            "sizes": report["sizes"],
        }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    faces = [r["faces_ingested"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(faces, [r["seconds"] / 60 for r in rows], "o-")
    left.set(xlabel="faces", ylabel="minutes", title="data_processing wall time")
    right.plot(faces, [r["tree_peak_gb"] for r in rows], "o-", label="data_processing")
    right.plot(faces, [r["rank_data_gb_1"] for r in rows], "s--", label="decoded share, 1 rank")
    right.plot(faces, [r["rank_data_gb_2"] for r in rows], "^--", label="decoded share, 2 ranks")
    right.set(xlabel="faces", ylabel="GB", title="peak memory")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--release", action="append", required=True, help="an AffectNet release, or none"
    )
    parser.add_argument("--storage-size", type=int, default=112, help="decode side per rank")
    parser.add_argument("--out", type=Path, required=True, help="folder for scale.json/.png")
    parser.add_argument("--scratch", type=Path, help="where the scratch projects go")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for release in args.release:
        path = None if release == "none" else Path(release)
        rows.append(measure(path, args.storage_size, args.scratch))
        print(json.dumps(rows[-1], indent=1), flush=True)
        (args.out / "scale.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{os.cpu_count()} cores, {psutil.virtual_memory().total / 1e9:.0f} GB")
    table = pd.DataFrame(rows).drop(columns=["sizes", "near_duplicate_sweep"], errors="ignore")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    plot(rows, args.out / "scale.png")


if __name__ == "__main__":
    main()
