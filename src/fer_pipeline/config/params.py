"""The base of typed pipeline parameters: a block whose unknown keys are errors."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class Params(BaseModel):
    """A block of pipeline parameters: an unknown key is an error that names the keys
    there are (with the closest one), not a setting silently ignored."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = list(cls.model_fields)
            unknown = [key for key in data if key not in known]
            if unknown:
                hints = [
                    f"{key!r} (did you mean {close[0]!r}?)"
                    if (close := difflib.get_close_matches(str(key), known, n=1))
                    else repr(key)
                    for key in unknown
                ]
                raise ValueError(f"unknown key {', '.join(hints)}; the keys are {', '.join(known)}")
        return data
