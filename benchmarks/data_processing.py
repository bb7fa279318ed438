"""Time `kedro run --pipelines data_processing` on the full raw data.

Runs in a throwaway copy of the project (so the project's own data/ is untouched) and
prints the wall time and the peak resident memory of the Kedro process.

    python benchmarks/data_processing.py [--raw-data PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _scratch import PROJECT, scratch_project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-data", type=Path, default=PROJECT.parent / "shared" / "data")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fer-bench-") as tmp:
        root = scratch_project(Path(tmp), args.raw_data)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
        command = ["kedro", "run", "--pipelines", "data_processing"]
        start = time.perf_counter()
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode:
            sys.exit(f"kedro run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    print(
        f"data_processing on {args.raw_data}: wall {wall:.1f} s, peak memory {peak_gb:.2f} GB "
        f"on {os.cpu_count()} cores (targets: <= 60 s, <= 4 GB)"
    )


if __name__ == "__main__":
    main()
