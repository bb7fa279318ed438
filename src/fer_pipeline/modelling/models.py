"""Building models by name, and the model bundle: weights plus what rebuilds them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from fer_pipeline.schema import CLASSES

CNN_NAME = "fer_cnn"
"""The FER2013 study's baseline: a ~4.7M-parameter CNN for 48x48 faces, from scratch."""
_META_KEY = "fer_pipeline"


class FerCNN(nn.Module):
    """Four VGG-style blocks (64-512 channels), global pooling, two dense layers."""

    def __init__(self, num_classes: int = len(CLASSES), in_chans: int = 3, drop: float = 0.3):
        super().__init__()
        blocks, channels = [], in_chans
        for width in (64, 128, 256, 512):
            blocks += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
                nn.Dropout(drop / 2),
            ]
            channels = width
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(drop),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _timm_model(name: str, image_size: int, pretrained: bool | str, **kwargs: Any) -> nn.Module:
    args: dict[str, Any] = {"num_classes": len(CLASSES), **kwargs}
    if isinstance(pretrained, str):
        if not Path(pretrained).is_file():
            raise FileNotFoundError(f"pretrained weights file not found: {pretrained}")
        args.update(pretrained=True, pretrained_cfg_overlay={"file": str(pretrained)})
    else:
        args["pretrained"] = bool(pretrained)
    try:
        try:
            return timm.create_model(name, img_size=image_size, **args)
        except TypeError:  # models without an img_size argument (CNNs)
            return timm.create_model(name, **args)
    except (OSError, ConnectionError, RuntimeError) as exc:
        if pretrained is True:
            raise RuntimeError(
                f"could not fetch timm's pretrained weights for {name} ({exc}); with no "
                "network set `pretrained: false` or the path of a local weights file"
            ) from exc
        raise


def build_model(
    name: str, image_size: int, pretrained: bool | str = False, **kwargs: Any
) -> nn.Module:
    """``fer_cnn`` or any timm model with a 7-class head; ``pretrained`` is ``False``,
    ``True`` (timm's download) or a local weights file."""
    if name == CNN_NAME:
        if pretrained:
            raise ValueError(f"{CNN_NAME} has no pretrained weights")
        return FerCNN(**kwargs)
    return _timm_model(name, image_size, pretrained, **kwargs)


@dataclass
class ModelBundle:
    """A trained model's weights and everything needed to rebuild and feed it."""

    spec: dict[str, Any]
    """``name``, ``image_size``, ``model_kwargs``, ``mean``, ``std``, ``classes`` and
    training facts (``epochs``, ``best_epoch``, ``val_accuracy``...)."""
    state_dict: dict[str, torch.Tensor] = field(repr=False)

    def build(self) -> nn.Module:
        """The model in eval mode on the CPU, weights loaded."""
        model = build_model(
            self.spec["name"], self.spec["image_size"], **self.spec.get("model_kwargs", {})
        )
        model.load_state_dict(self.state_dict)
        return model.eval()

    def save(self, path: str | Path) -> None:
        """One safetensors file; the spec goes in its metadata."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict.items()}
        save_file(tensors, str(path), metadata={_META_KEY: json.dumps(self.spec)})

    @classmethod
    def load(cls, path: str | Path) -> ModelBundle:
        with safe_open(str(path), framework="pt") as f:
            spec = json.loads(f.metadata()[_META_KEY])
        return cls(spec=spec, state_dict=load_file(str(path)))
