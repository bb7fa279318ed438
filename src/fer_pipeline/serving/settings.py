"""The API's settings, ``ServingSettings``: ``FER_<NAME>`` environment variables read by
pydantic-settings, and for how faces are found and cropped, the project's ``inference``
parameters, as batch inference reads them.

``ServingSettings.recognition`` is a ``RecognitionConfig``, the class that batch
inference's ``InferenceConfig`` extends (``fer_pipeline.runtime.config``): each of its
fields comes from ``FER_<FIELD>`` when that is set, else from the ``inference``
parameters of the served project (``FER_PROJECT_PATH``, in Kedro environment
``FER_KEDRO_ENV``) when it has a ``conf`` folder, else from the class's default. A
threshold set once in ``parameters_inference.yml`` reaches both.

A bad value stops start-up with ``SettingsError``, one line per problem naming the
variable or parameter, its value and what it may be. The settings tables of
docs/serving.md are made from these fields by ``python -m fer_pipeline.docs_tables``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from fer_pipeline.config.loader import inference_parameters, is_project
from fer_pipeline.runtime.config import RecognitionConfig

ENV_PREFIX = "FER_"


def env_name(field: str) -> str:
    """The environment variable of a setting (a field of ``recognition`` too)."""
    return f"{ENV_PREFIX}{field.upper()}"


def _environ() -> dict[str, str]:
    """The environment with upper-case names, as pydantic-settings matches them (its
    names are case-insensitive); empty values are unset."""
    return {name.upper(): value for name, value in os.environ.items() if value}


def _names(value: Any) -> Any:
    """``a, b,c`` -> ``["a", "b", "c"]``; anything else as it is."""
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    return value


class _RecognitionFromEnv(PydanticBaseSettingsSource):
    """``FER_<FIELD>`` for each field of ``RecognitionConfig``, as ``recognition``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the variables itself

    def __call__(self) -> dict[str, Any]:
        environ = _environ()
        found = {
            name: environ[env_name(name)]
            for name in RecognitionConfig.model_fields
            if env_name(name) in environ
        }
        return {"recognition": found} if found else {}


class _RecognitionFromProject(PydanticBaseSettingsSource):
    """The recognition keys of the served project's ``inference`` parameters, as
    ``recognition``; nothing when the project path has no ``conf`` folder."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the project itself

    def __call__(self) -> dict[str, Any]:
        state = self.current_state  # what the sources above found: arguments, variables
        if not isinstance(state.get("recognition", {}), dict):
            return {}  # a whole RecognitionConfig was given
        project = Path(state.get("project_path") or Path.cwd())
        if not is_project(project):
            return {}
        parameters = inference_parameters(project, state.get("kedro_env"))
        found = {k: v for k, v in parameters.items() if k in RecognitionConfig.model_fields}
        return {"recognition": found} if found else {}


class ServingSettings(BaseSettings):
    """What the API serves and how: each field is set by ``FER_<FIELD>`` (case
    ignored; an empty value is unset), ``recognition`` as the module says."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True)

    onnx_model: Path | None = Field(None, description="the path of an ONNX file to serve")
    model_uri: str | None = Field(
        None,
        description="else the ONNX artifact of this MLflow model "
        "(`models:/fer_pipeline@champion`; nothing is unpickled)",
    )
    int8: bool = Field(
        False,
        description="`1`: serve the latest int8 export (`model_onnx_int8`) instead of fp32",
    )
    project_path: Path = Field(
        default_factory=Path.cwd,
        json_schema_extra={"shown": "the working directory"},
        description="else the project whose newest complete `model_onnx` is served; its "
        "`inference` parameters set the recognition settings below",
    )
    kedro_env: str | None = Field(
        None, description="the project's Kedro environment (none: `local`, as `kedro run`)"
    )
    max_upload_bytes: int = Field(
        10 * 1024 * 1024,
        gt=0,
        description="larger bodies get 413, with `Connection: close`: from `Content-Length` "
        "before any byte is read, and counted while a chunked body streams in",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        allow_inf_nan=False,
        description="the longest wait in seconds for the next chunk of a body; then 408",
    )
    max_uploads: int = Field(
        64,
        gt=0,
        description="bodies received at once; one more gets 503 with `Retry-After: 1` at once",
    )
    max_pixels: int = Field(
        40_000_000,
        gt=0,
        description="larger images get 413, from the header, before decoding (also a "
        "50000 x 50000 pixel bomb)",
    )
    max_faces: int = Field(32, gt=0, description="the largest faces classified per image")
    workers: int = Field(
        2,
        gt=0,
        description="decoding and detection run in a pool of this many threads outside the "
        "model's lock, and image headers are parsed in a lane of as many threads of their own",
    )
    queue: int = Field(
        8,
        ge=0,
        description="requests waiting for a worker of a lane; one more gets 503 with "
        "`Retry-After: 1`",
    )
    light_pixels: int = Field(
        4_000_000,
        ge=0,
        description="images up to this many pixels have a worker (and queue) of their own, "
        "so they never wait behind large ones",
    )
    api_key: SecretStr | None = Field(
        None,
        description="when set, `/predict` and `/health` need the header `X-API-Key` (401 "
        "otherwise); the web page has a field for it",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "[::1]", "::1"],
        description="`Host` headers served, comma-separated (Starlette's "
        "`TrustedHostMiddleware`; others get 400): add your host name",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="origins allowed to call the API from a browser, comma-separated "
        "(none: CORS off)",
    )
    recognition: RecognitionConfig = Field(default_factory=RecognitionConfig)

    @field_validator("allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _names(value)

    @field_validator("project_path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.resolve()

    @model_validator(mode="after")
    def _int8_of_an_export(self) -> ServingSettings:
        if self.int8 and self.model_uri and not self.onnx_model:
            raise ValueError(
                "FER_INT8 serves the export pipeline's int8 model; a registered model has "
                "only its fp32 ONNX artifact: unset FER_INT8 or set FER_ONNX_MODEL"
            )
        return self

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise SettingsError(_explained(error, values)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then ``FER_*`` variables, then the project's parameters."""
        return (
            init_settings,
            env_settings,
            _RecognitionFromEnv(settings_cls),
            _RecognitionFromProject(settings_cls),
        )


def _explained(error: ValidationError, given: dict[str, Any]) -> str:
    """One line per problem, naming where the value came from: ``FER_MIN_FACE='abc':
    Input should be a valid integer...``."""
    environ, lines = _environ(), []
    project = given.get("project_path") or environ.get(env_name("project_path")) or Path.cwd()
    for problem in error.errors():
        loc = [str(part) for part in problem["loc"]]
        message = re.sub(r"^(Value|Assertion) error, ", "", problem["msg"])
        nested = loc[:1] == ["recognition"] and len(loc) > 1
        field = loc[1] if nested else (loc[0] if loc else "")
        if not loc:
            lines.append(f"  {message}")
        elif loc[0] not in given and env_name(field) in environ:
            lines.append(f"  {env_name(field)}={environ[env_name(field)]!r}: {message}")
        elif nested and loc[0] not in given:
            value = problem.get("input")
            lines.append(
                f"  inference.{field}: {value!r} in the parameters of {project} "
                f"(or set {env_name(field)}): {message}"
            )
        else:
            lines.append(f"  {'.'.join(loc)}: {message}")
    return "invalid API settings (see docs/serving.md#settings):\n" + "\n".join(lines)
