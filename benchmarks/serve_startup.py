"""Start-up of the serving runtime: seconds from a fresh interpreter to the first answer
(import the API module, load the model, build the recogniser, classify one face) and
the process's peak memory, for the model the API would serve.

    python benchmarks/serve_startup.py --project .        # the project's latest export
    python benchmarks/serve_startup.py --onnx model.onnx  # an ONNX file
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, resource, sys, time
started = time.perf_counter()
import numpy as np
from fer_pipeline.runtime.faces import FaceDetector
from fer_pipeline.serving.app import load_model
from fer_pipeline.runtime.faces import FaceRecogniser
imported = time.perf_counter()
classifier, version = load_model()
recogniser = FaceRecogniser(classifier, FaceDetector())
face = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
recogniser.recognise(face, detect=False)
done = time.perf_counter()
print(json.dumps({
    "import_s": imported - started,
    "load_and_first_answer_s": done - imported,
    "total_s": done - started,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "torch_imported": "torch" in sys.modules,
    "model": classifier.spec["name"],
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path.cwd())
    parser.add_argument("--onnx", type=Path, help="an ONNX file instead of the project's export")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "FER_PROJECT_PATH": str(args.project.resolve())}
    if args.onnx:
        env["FER_ONNX_MODEL"] = str(args.onnx.resolve())
    runs = []
    for _ in range(args.rounds):
        result = subprocess.run(
            [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
        )
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["total_s"])
    print(
        f"{best['model']}: import {best['import_s']:.2f} s, load + first answer "
        f"{best['load_and_first_answer_s']:.2f} s, total {best['total_s']:.2f} s (best of "
        f"{args.rounds}), peak memory {best['peak_rss_mb']:.0f} MB, torch imported: "
        f"{best['torch_imported']}"
    )


if __name__ == "__main__":
    main()
