"""Building models by name, and the model bundle: weights plus what rebuilds them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from fer_pipeline.data.schema import CLASSES, METADATA_KEY

CNN_NAME = "fer_cnn"
"""The FER2013 study's baseline: a ~4.7M-parameter CNN for 48x48 faces, from scratch."""


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


# timm's registry reads a module's `default_cfgs` when it registers its models.
default_cfgs = generate_default_cfgs(
    {
        "fer_resnet18": {
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "input_size": (3, 48, 48),
            "pool_size": (6, 6),
            "num_classes": len(CLASSES),
        }
    }
)


@register_model
def fer_resnet18(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 at half width (32-256 channels), stem without max-pool: for 48-64 px
    faces, 2.8M parameters."""
    model = build_model_with_cfg(
        ResNet,
        "fer_resnet18",
        pretrained,
        block=BasicBlock,
        layers=(2, 2, 2, 2),
        channels=(32, 64, 128, 256),
        stem_width=32,
        **kwargs,
    )
    # timm's stem divides the side by 4 (stride-2 conv, then max-pool): a 48 px face
    # would reach the first stage at 12 px. Without the pool it keeps 24 px.
    model.maxpool = nn.Identity()
    return model


def _timm_model(name: str, image_size: int, pretrained: bool | str, **kwargs: Any) -> nn.Module:
    args: dict[str, Any] = {"num_classes": len(CLASSES), **kwargs}
    if isinstance(pretrained, str):
        if not Path(pretrained).is_file():
            raise FileNotFoundError(f"pretrained weights file not found: {pretrained}")
        args.update(pretrained=True, pretrained_cfg_overlay={"file": str(pretrained)})
    elif pretrained and timm.is_model(name) and not timm.is_model_pretrained(name):
        raise ValueError(  # fer_resnet18 (the default) is this project's own architecture
            f"timm has no pretrained weights for {name}: set `pretrained: false`, the path "
            "of a weights file, or a model that has them (e.g. `--env vit`, ViT-Tiny)"
        )
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
class ModelSpec:
    """What rebuilds a trained model and feeds it, and the facts of its training."""

    name: str
    """``fer_cnn`` or a timm model name."""
    image_size: int
    mean: list[float]
    """Normalisation of ``[0, 1]`` RGB input, per channel."""
    std: list[float]
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    """Epochs trained; the facts below are those of the best epoch, the one kept."""
    best_epoch: int | None = None
    val_accuracy: float | None = None
    val_macro_f1: float | None = None
    train_images: int | None = None
    sources: list[str] | None = None
    """The sources trained and validated on (``training.sources``); None: all."""
    teacher: list[dict[str, Any]] | None = None
    """The models it was distilled from: each one's reference, weights digest and
    validation accuracy (``distill.teacher_record``); ``None`` without distillation."""
    temperature: float = 1.0
    """Divides the logits before the softmax (``modelling.calibration``): fitted on val
    after training; 1.0, no scaling, for models trained before it was."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class ModelBundle:
    """A trained model's weights and everything needed to rebuild and feed it."""

    spec: ModelSpec
    state_dict: dict[str, torch.Tensor] = field(repr=False)

    def build(self) -> nn.Module:
        """The model in eval mode on the CPU, weights loaded."""
        model = build_model(self.spec.name, self.spec.image_size, **self.spec.model_kwargs)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def digest(self) -> str:
        """A digest of the weights: the same for the same trained model wherever it is."""
        sha = hashlib.sha256()
        for key in sorted(self.state_dict):
            sha.update(key.encode())
            sha.update(
                self.state_dict[key].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()
            )
        return sha.hexdigest()[:20]

    def save(self, path: str | Path) -> None:
        """One safetensors file; the spec goes in its metadata."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict.items()}
        save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(self.spec.to_dict())})

    @classmethod
    def load(cls, path: str | Path) -> ModelBundle:
        with safe_open(str(path), framework="pt") as f:
            spec = ModelSpec.from_dict(json.loads(f.metadata()[METADATA_KEY]))
        return cls(spec=spec, state_dict=load_file(str(path)))
