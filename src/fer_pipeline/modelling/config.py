"""The training recipe: every parameter, its default, and the checks run before any work.

This dataclass is the one place for the defaults, which are the best recipe measured,
for a GPU (``kedro run``; docs/recipes.md): ``conf/base/parameters_training.yml`` and
the environments (``conf/cpu``, ``conf/quick``, ``conf/vit``) set only what they change,
and the node's type hint makes Kedro build and check it before the first node runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from fer_pipeline.data.schema import LABEL_QUALITIES, SOURCES

BALANCE_CHOICES = ("none", "sampler", "loss")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
MONITOR_CHOICES = ("val_accuracy", "val_macro_f1")
"""Logged metrics that pick the best epoch (higher is better)."""
DISTILLATION_CHOICES = ("auto", "hard", "soft")
PROBABILITIES = ("hflip", "mix_prob", "switch_prob", "grayscale", "low_resolution", "erasing")
"""Fields that are probabilities, in [0, 1]."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


RUN_FIELDS = frozenset(
    {
        "device",
        "channels_last",
        "compile",
        "data_on_device",
        "eval_batch_size",  # validation only; the figures are sums over all images
        "decoded_memory_gb",  # decoded or encoded: the same batches; streamed: the same
        # images each epoch, other images in a batch (a resumed run may switch form)
        "checkpoint_dir",
        "nproc_per_node",  # their product, the world size, is in the key (TrainConfig.recipe)
        "nnodes",
        "rdzv_endpoint",
    }
)
"""``TrainConfig`` fields that say where, on what and how fast a run trains, not what it
trains: the resume checkpoint's key leaves them out, so that moving the checkpoints,
turning ``compile`` on or moving to another GPU still resumes. They change the weights
at most by rounding (``device``: also by the random draws of another device type, and
``precision: auto`` follows the device). Every other field is the recipe: it changes
the weights a run ends with, so a change starts afresh. A new field is recipe unless
named here."""


@dataclass
class TrainConfig:
    """The training recipe (defaults: the best measured, for a GPU: ``fer_resnet18`` at
    64 px for 60 epochs on the FER+ vote distributions), then the run settings
    (``RUN_FIELDS``)."""

    # The model
    model: str = "fer_resnet18"  # any timm model name (vit_tiny_patch16_224...), or fer_cnn
    image_size: int = 64  # FER+ is 48 px, RAF-DB 100 px; timm resizes ViT position embeddings
    pretrained: bool | str = False  # false | true (timm's download) | path of a weights file
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {drop_path_rate: 0.1}
    mean: list[float] | None = None  # normalisation; None: the model's own (timm data config)
    std: list[float] | None = None
    # Optimisation: AdamW (timm's factory), cosine schedule per update after a linear warmup
    epochs: int = 60
    batch_size: int = 256
    lr: float = 2e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05  # not on norms, biases, or what the model's no_weight_decay() names
    warmup_epochs: float = 2.0  # epochs, not steps
    grad_clip: float = 1.0  # max gradient norm; 0: off
    ema_decay: float = 0.999  # EMA of weights; 0: off
    # Augmentation, on the device, per batch
    hflip: float = 0.5  # probability
    rotation: float = 10.0  # degrees, +/-
    scale: list[float] = field(default_factory=lambda: [0.85, 1.15])  # random zoom
    translate: float = 0.05  # fraction of the side, +/-
    mixup_alpha: float = 0.2
    cutmix_alpha: float = 1.0
    mix_prob: float = 0.2  # probability that a batch is mixed; 0: no Mixup/CutMix
    switch_prob: float = 0.5  # CutMix instead of Mixup
    grayscale: float = 0.0  # probability that a colour face turns grey (FER+ is grey)
    brightness: float = 0.0  # strength s: a factor in [1 - s, 1 + s]; 0: off
    contrast: float = 0.0  # strength, as brightness
    low_resolution: float = 0.0  # probability of a small copy (augment.LOW_RESOLUTION_SIDES)
    erasing: float = 0.0  # probability of timm's random erasing (an occluded face)
    # Targets and loss
    label_smoothing: float = 0.1
    soft_targets: bool = True  # train on soft_label (FER+ vote_policy: probability; else one-hot)
    balance: str = "loss"  # none | sampler (class-balanced sampling) | loss (class weights)
    balance_power: float = 0.5  # class weight = frequency ** -power (0.5: 1/sqrt)
    # Distillation from models this project trained (docs/training.md "Distillation")
    teacher: str | list[str] | None = None  # a model file or folder, or models:/; a list: ensemble
    distillation: str = "auto"  # hard (teacher's argmax) | soft (KL at tau) | auto: hard for
    # a student with DeiT's distillation token (deit_*_distilled_*), soft for the others
    distillation_alpha: float = 0.5  # weight of the distillation term, 1 - alpha of the labels'
    distillation_tau: float = 1.0  # temperature of soft distillation
    # The data trained on
    sources: tuple[str, ...] | None = None  # train and validate on these only (cross-dataset)
    train_subset: int | None = None  # a stratified sample of this many training images
    label_qualities: tuple[str, ...] = (
        LABEL_QUALITIES  # [manual]: leave AffectNet's automatic labels out
    )
    storage_size: int | None = None  # side at which images are decoded and kept; None: image_size
    # Stopping, the best epoch, randomness and numerics
    early_stopping_patience: int = 0  # epochs without a better `monitor`; 0: off
    monitor: str = "val_accuracy"  # picks the best epoch, whose weights are kept
    seed: int = 42
    precision: str = "auto"  # auto (bf16, or fp16 with a grad scaler, on CUDA; fp32 on CPU)

    # Run settings (RUN_FIELDS, not in the resume key): where, on what and how fast
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    data_on_device: bool | str = "auto"  # keep the uint8 training set on the GPU when it fits
    eval_batch_size: int = 256
    decoded_memory_gb: float | None = (
        None  # above it a rank keeps its share encoded; None: half the free memory
    )
    checkpoint_dir: str = "data/06_models/checkpoints"
    # Several processes (docs/distributed.md); batch_size is per process
    nproc_per_node: int = 1  # ranks on this machine; > 1: DDP, started by torchrun's engine
    nnodes: int = 1  # machines; the others start their ranks with `torchrun -m fer_pipeline.train`
    rdzv_endpoint: str = ""  # HOST:PORT of this machine (node 0) when nnodes > 1

    def __post_init__(self) -> None:
        if self.decoded_memory_gb is not None and not self.decoded_memory_gb > 0:
            raise ValueError(
                f"training.decoded_memory_gb must be above 0, got {self.decoded_memory_gb!r}"
            )
        choices = {
            "balance": BALANCE_CHOICES,
            "precision": PRECISION_CHOICES,
            "monitor": MONITOR_CHOICES,
            "distillation": DISTILLATION_CHOICES,
            "data_on_device": ("auto", True, False),
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"training.{name} must be one of {allowed}, got {value!r}")
        for spec in fields(self):  # numbers, also when YAML read `1e-5` as a string
            value = getattr(self, spec.name)
            if spec.type not in ("int", "float", "int | None") or value is None:
                continue
            integer = spec.type != "float"
            number = _number(value)
            if number is None or (integer and number != int(number)):
                raise ValueError(f"training.{spec.name} must be {spec.type}, got {value!r}")
            setattr(self, spec.name, int(number) if integer else float(number))
        positive = (
            "epochs",
            "batch_size",
            "image_size",
            "lr",
            "eval_batch_size",
            "nproc_per_node",
            "nnodes",
            "distillation_tau",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"training.{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(
                f"training.warmup_epochs must be between 0 and epochs ({self.epochs}), "
                f"got {self.warmup_epochs!r}"
            )
        for name in PROBABILITIES:
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"training.{name} must be between 0 and 1, got {value!r}")
        for name in ("brightness", "contrast"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"training.{name} must be in [0, 1), got {value!r}")
        if self.mix_prob > 0 and self.mixup_alpha <= 0 and self.cutmix_alpha <= 0:
            raise ValueError("training.mix_prob > 0 needs mixup_alpha > 0 or cutmix_alpha > 0")
        if self.storage_size is not None and not 0 < self.storage_size <= self.image_size:
            raise ValueError(
                f"training.storage_size must be between 1 and image_size ({self.image_size}), "
                f"got {self.storage_size!r}"
            )
        self.label_qualities = tuple(self.label_qualities)
        if not self.label_qualities or not set(self.label_qualities) <= set(LABEL_QUALITIES):
            raise ValueError(
                f"training.label_qualities must be some of {LABEL_QUALITIES}, "
                f"got {list(self.label_qualities)!r}"
            )
        if self.sources is not None:
            self.sources = tuple(self.sources)
            if not self.sources or not set(self.sources) <= set(SOURCES):
                raise ValueError(
                    f"training.sources must be null (all) or some of {SOURCES}, "
                    f"got {list(self.sources)!r}"
                )
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("training.nnodes > 1 needs rdzv_endpoint (HOST:PORT of this machine)")
        if len(self.scale) != 2 or self.scale[0] > self.scale[1]:
            raise ValueError(f"training.scale must be [low, high], got {self.scale!r}")
        self._check_distillation()

    def _check_distillation(self) -> None:
        if not 0 <= self.distillation_alpha <= 1:
            raise ValueError(
                f"training.distillation_alpha must be between 0 and 1, "
                f"got {self.distillation_alpha!r}"
            )
        if self.teacher is None:
            return
        references = [self.teacher] if isinstance(self.teacher, str) else self.teacher
        if (
            not isinstance(references, list | tuple)
            or not references
            or not all(isinstance(r, str) and r.strip() for r in references)
        ):
            raise ValueError(
                "training.teacher must be a model reference or a non-empty list of them, "
                f"got {self.teacher!r}"
            )
        for reference in references:
            if reference.lower().endswith(".onnx"):
                raise ValueError(
                    f"training.teacher {reference}: an ONNX teacher cannot run on the training "
                    "device in the training precision; name the model's safetensors file "
                    "(data/06_models/model.safetensors) or its models:/ URI instead"
                )
        if not isinstance(self.teacher, str):
            self.teacher = list(references)

    def recipe(self) -> dict[str, Any]:
        """What changes the result, the resume key's part: every field but
        ``RUN_FIELDS``, and the world size (``batch_size`` is per process, and each rank
        draws its own order): 2 ranks on one machine or 1 on each of 2 are the same."""
        recipe = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RUN_FIELDS}
        return {**recipe, "world_size": self.nproc_per_node * self.nnodes}

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> TrainConfig:
        """From a parameters dict, naming every unknown key."""
        unknown = sorted(set(params) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown training parameter(s): {', '.join(unknown)}")
        return cls(**params)
