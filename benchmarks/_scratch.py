"""A throwaway copy of this project's configuration, so benchmarks leave data/ alone."""

from __future__ import annotations

import shutil
from pathlib import Path

from fer_pipeline.config.loader import raw_data

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = raw_data(PROJECT)
"""The real releases: the project's ``raw_data`` (../shared/data unless changed)."""
RAF_FACES = SHARED_DATA / "rafdb/basic/Image/aligned.zip"


def scratch_project(root: Path, raw_data: Path | None = None) -> Path:
    """``pyproject.toml``, ``.telemetry`` and ``conf/`` (without ``conf/local``) copied
    into ``root``; ``raw_data`` becomes its raw-data root (checked first: a run that
    would find it missing after an hour of ingestion stops at once)."""
    if raw_data is not None and not (raw_data / "ferplus").is_dir():
        raise FileNotFoundError(
            f"no real data at {raw_data}: ../shared/data must lie beside the project ({PROJECT})"
        )
    shutil.copy(PROJECT / "pyproject.toml", root)
    shutil.copy(PROJECT / ".telemetry", root)
    shutil.copytree(PROJECT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf/local").mkdir()
    if raw_data is not None:
        (root / "conf/local/globals.yml").write_text(f"raw_data: {raw_data.resolve()}\n")
    (root / "src").mkdir()  # the package itself is installed
    return root
