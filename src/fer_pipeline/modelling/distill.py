"""Knowledge distillation from models this project trained: the teachers, frozen, and
DeiT's distillation loss (``facebookresearch/deit``, ``losses.py``).

A teacher sees the student's batch as augmented and mixed on the device, converted to
its own input (size and normalisation), in the student's autocast precision. A student
with DeiT's distillation token (timm's ``VisionTransformerDistilled``, e.g.
``deit_tiny_distilled_patch16_224``) learns the labels with its class head and the
teacher with its distillation head; any other student learns both with its one head.
In eval mode timm's distilled ViT averages its two heads, so validation, export and
serving need nothing of this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fer_pipeline.data.schema import CLASSES
from fer_pipeline.data.versions import latest_complete
from fer_pipeline.modelling.device import normalise
from fer_pipeline.modelling.models import ModelBundle, ModelSpec
from fer_pipeline.runtime.model_store import MLFLOW_SCHEMES, load_registered_weights


def teacher_references(teacher: str | Sequence[str] | None) -> list[str]:
    """``training.teacher`` as a list of references (empty without a teacher)."""
    if teacher is None:
        return []
    return [teacher] if isinstance(teacher, str) else list(teacher)


def resolve_teacher(reference: str) -> Path:
    """The local ``ModelBundle`` file of a reference: a ``.safetensors`` file; a
    versioned output's folder (``data/06_models/model.safetensors``: its newest complete
    version); or an MLflow ``models:/`` / ``runs:/`` URI of a model the training
    pipeline logged (its ``weights`` artifact, downloaded)."""
    if reference.startswith(MLFLOW_SCHEMES):
        return load_registered_weights(reference)
    path = Path(reference).expanduser()
    if path.is_dir():
        found = latest_complete(path)
        if found is None:
            raise FileNotFoundError(
                f"training.teacher {reference}: no complete version in it "
                f"(looked for {path}/*/{path.name})"
            )
        return found
    if not path.is_file():
        raise FileNotFoundError(f"training.teacher {reference}: no such file or folder")
    return path


def load_teachers(teacher: str | Sequence[str] | None) -> list[tuple[str, ModelBundle]]:
    """Each reference of ``training.teacher`` with its model bundle."""
    return [(ref, ModelBundle.load(resolve_teacher(ref))) for ref in teacher_references(teacher)]


def teacher_record(reference: str, bundle: ModelBundle) -> dict[str, Any]:
    """What the student's spec and the MLflow run record of a teacher."""
    return {
        "reference": reference,
        "digest": bundle.digest(),
        "val_accuracy": bundle.spec.val_accuracy,
    }


def teacher_input(
    x: torch.Tensor, mean: Sequence[float], std: Sequence[float], spec: ModelSpec
) -> torch.Tensor:
    """The student's normalised batch ``x`` (``mean``, ``std``) as the teacher of
    ``spec`` takes it: back to ``[0, 1]`` pixels, resized (bilinear) to its side and
    normalised with its own statistics; ``x`` itself when they are the same."""
    same_stats = list(spec.mean) == list(mean) and list(spec.std) == list(std)
    if same_stats and tuple(x.shape[-2:]) == (spec.image_size, spec.image_size):
        return x
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return normalise(x.float() * s + m, spec.mean, spec.std, spec.image_size)


class Teacher(nn.Module):
    """Trained models, frozen, whose class probabilities averaged (an ensemble when
    there are several) the student learns from. Always in eval mode and without
    gradients; not wrapped in DDP: each rank runs its own copy."""

    def __init__(self, teachers: Sequence[tuple[str, ModelBundle]]):
        super().__init__()
        for reference, bundle in teachers:
            if bundle.spec.classes != list(CLASSES):
                raise ValueError(
                    f"training.teacher {reference} predicts {bundle.spec.classes}, "
                    f"not the student's classes {list(CLASSES)}"
                )
        self.members = nn.ModuleList(bundle.build() for _, bundle in teachers)
        self.specs = [bundle.spec for _, bundle in teachers]
        self.records = [teacher_record(reference, bundle) for reference, bundle in teachers]
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Teacher:
        """Stays in eval mode: a teacher's BatchNorm statistics and dropout never train."""
        return super().train(False)

    @torch.no_grad()
    def forward(
        self, x: torch.Tensor, mean: Sequence[float], std: Sequence[float], tau: float = 1.0
    ) -> torch.Tensor:
        """Probabilities at temperature ``tau`` for the student's normalised batch ``x``,
        averaged over the teachers (float32)."""
        probs = [
            (member(teacher_input(x, mean, std, spec)).float() / tau).softmax(1)
            for member, spec in zip(self.members, self.specs, strict=True)
        ]
        return torch.stack(probs).mean(0)


def distillation_loss(
    outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    targets: torch.Tensor,
    teacher_probs: torch.Tensor,
    kind: str,
    alpha: float,
    tau: float,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """DeiT's ``DistillationLoss``: ``(1 - alpha)`` x the cross-entropy of the class
    head on ``targets`` (distributions, optionally class-weighted) plus ``alpha`` x the
    distillation term of the distillation head: ``hard``, cross-entropy on the
    teacher's argmax; ``soft``, KL divergence to the teacher's probabilities at
    temperature ``tau`` (``teacher_probs`` must be at that temperature), times
    ``tau**2``. ``outputs``: a distilled ViT's ``(class, distillation)`` logits in
    training, or one head's logits, which then serve both terms."""
    logits, logits_kd = outputs if isinstance(outputs, tuple) else (outputs, outputs)
    base = F.cross_entropy(logits.float(), targets, weight=weight)
    if kind == "hard":
        distill = F.cross_entropy(logits_kd.float(), teacher_probs.argmax(1))
    else:
        # DeiT divides the summed KL by batch x classes (PyTorch's legacy mean, its
        # issue 61); per image (batchmean) is Hinton's scale, which keeps alpha's
        # balance with the cross-entropy whatever the number of classes.
        log_probs = F.log_softmax(logits_kd.float() / tau, dim=1)
        distill = F.kl_div(log_probs, teacher_probs, reduction="batchmean") * tau**2
    return (1 - alpha) * base + alpha * distill


def inference_logits(outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The logits the model gives in eval mode: a distilled ViT's two heads averaged."""
    return (outputs[0] + outputs[1]) / 2 if isinstance(outputs, tuple) else outputs
