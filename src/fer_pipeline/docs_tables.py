"""The settings tables of the docs, made from the settings classes so that each default
and description is written once, in the class.

A page holds a table between ``<!-- settings:NAME -->`` and ``<!-- /settings:NAME -->``.
``python -m fer_pipeline.docs_tables`` rewrites them all; with ``--check`` it only says
which pages differ (a test runs it). A field's ``json_schema_extra={"shown": ...}`` gives
its default in words where the value would say nothing (a path, a file shipped).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from fer_pipeline.pipelines.inference.config import InferenceConfig
from fer_pipeline.runtime.config import RecognitionConfig
from fer_pipeline.serving.settings import ServingSettings, env_name

DOCS = Path(__file__).resolve().parents[2] / "docs"


def shown_default(field: FieldInfo) -> str:
    """A field's default as a table shows it: ``none``, ``on``, ``48``, ``40,000,000``..."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "shown" in extra:
        return str(extra["shown"])
    value = field.get_default(call_default_factory=True)
    if value is None or value == []:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return f"`{','.join(value)}`"
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,}"
    return f"`{value}`" if isinstance(value, str) else f"{value:g}"


def _table(
    model: type[BaseModel], columns: list[str], key: Callable[[str], str], skip: str = ""
) -> str:
    """A row per field of ``model`` (but ``skip``): ``key(name)`` (the first columns),
    then its default and its description."""
    lines = [f"| {' | '.join(columns)} |", "| --- " * len(columns) + "|"]
    for name, field in model.model_fields.items():
        if name != skip:
            lines.append(f"| {key(name)} | {shown_default(field)} | {field.description} |")
    return "\n".join(lines)


def page_tables() -> dict[str, dict[str, str]]:
    """``{page: {table name: markdown}}`` for every generated table of the docs."""
    plain = ["key", "default", "what it does"]

    def code(name: str) -> str:
        return f"`{name}`"

    return {
        "serving.md": {
            "server": _table(
                ServingSettings,
                ["variable", "default", "what it does"],
                lambda name: f"`{env_name(name)}`",
                skip="recognition",
            ),
            "recognition": _table(
                RecognitionConfig,
                ["variable", "parameter", "default", "what it does"],
                lambda name: f"`{env_name(name)}` | `inference.{name}`",
            ),
        },
        "batch-inference.md": {"inference": _table(InferenceConfig, plain, code)},
        "python-api.md": {"recognition": _table(RecognitionConfig, plain, code)},
    }


def with_tables(text: str, tables: dict[str, str]) -> str:
    """``text`` with each ``<!-- settings:NAME -->`` block replaced by ``tables[NAME]``."""
    for name, table in tables.items():
        pattern = rf"(<!-- settings:{name} -->\n)(?:.*?\n)?(<!-- /settings:{name} -->)"
        text, count = re.subn(
            pattern, lambda m, t=table: f"{m[1]}{t}\n{m[2]}", text, flags=re.DOTALL
        )
        if count != 1:
            raise ValueError(f"no single <!-- settings:{name} --> block")
    return text


def stale_pages(docs: Path = DOCS, write: bool = False) -> list[str]:
    """The pages whose tables differ from the classes; rewritten when ``write``."""
    stale = []
    for name, tables in page_tables().items():
        page = docs / name
        text = page.read_text()
        if (new := with_tables(text, tables)) != text:
            stale.append(name)
            if write:
                page.write_text(new)
    return stale


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    stale = stale_pages(write=not check)
    verb = "differ from the settings classes" if check else "rewritten"
    print(f"{', '.join(stale)}: {verb}" if stale else "the settings tables are up to date")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
