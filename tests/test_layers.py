"""The layers of pyproject.toml's import-linter contracts hold, and break as they should."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(project: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``project/src``, with its pyproject.toml."""
    env = os.environ | {"PYTHONPATH": str(project / "src")}
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)


def test_the_contracts_hold_and_fail_when_a_layer_imports_one_above_it(tmp_path):
    kept = lint_imports(ROOT)
    assert kept.returncode == 0, kept.stdout
    assert "BROKEN" not in kept.stdout and kept.stdout.count("KEPT") >= 4

    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("*.onnx"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "src/fer_pipeline/data/leak.py").write_text(
        "from fer_pipeline.modelling.models import ModelBundle\n"
    )
    (tmp_path / "src/fer_pipeline/runtime/heavy.py").write_text("import torch\n")
    broken = lint_imports(tmp_path)
    assert broken.returncode == 1
    assert "fer_pipeline.data.leak -> fer_pipeline.modelling.models" in broken.stdout
    assert "fer_pipeline.runtime.heavy -> torch" in broken.stdout
