"""Batched augmentation on the tensors' own device: flips and affine transforms,
photometric changes (grey, brightness, contrast, low resolution, erasing), and
Mixup/CutMix of soft targets."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.data.random_erasing import RandomErasing

from fer_pipeline.modelling.device import normalise

LOW_RESOLUTION_SIDES = (16, 40)
"""``low_resolution``: the side in pixels a face goes down to (at most the input's side
less one) before it is resized back: a small, distant or blurred face, which FER+'s
48 px and RAF-DB's 100 px faces are not."""


class BatchAugment:
    """Random horizontal flip, rotation, scale and translation of a whole uint8 batch in
    one ``grid_sample``, then normalisation; with ``size``, the same sampling also
    resizes the batch to ``size`` pixels square (images stored smaller than the model's
    input).

    Photometric options, each a probability or strength, off at 0 (and then drawing no
    random numbers, so that a recipe without them trains as before): ``grayscale``
    (colour to grey, as FER+ is), ``brightness`` and ``contrast`` (a factor in
    [1 - s, 1 + s]), ``low_resolution`` (down to ``LOW_RESOLUTION_SIDES`` and back:
    a distant or blurred face, a small webcam frame) and ``erasing`` (timm's
    ``RandomErasing``, per-pixel noise: an occluded face).
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        hflip: float = 0.5,
        rotation: float = 10.0,
        scale: Sequence[float] = (1.0, 1.0),
        translate: float = 0.0,
        size: int | None = None,
        grayscale: float = 0.0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        low_resolution: float = 0.0,
        erasing: float = 0.0,
    ):
        self.mean, self.std, self.size = mean, std, size
        self.hflip, self.rotation, self.scale, self.translate = hflip, rotation, scale, translate
        self.grayscale, self.brightness, self.contrast = grayscale, brightness, contrast
        self.low_resolution = low_resolution
        self.erasing = (
            RandomErasing(probability=erasing, mode="pixel", device="cpu") if erasing > 0 else None
        )

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = images.float() / 255.0
        n, device = x.shape[0], x.device

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=generator, device=device)

        angle = uniform(-1, 1) * math.radians(self.rotation)
        zoom = uniform(*self.scale)
        flip = torch.where(uniform(0, 1) < self.hflip, -1.0, 1.0)
        shift = [uniform(-2 * self.translate, 2 * self.translate) for _ in range(2)]
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [
                torch.stack([cos * flip, -sin, shift[0]], dim=1),
                torch.stack([sin * flip, cos, shift[1]], dim=1),
            ],
            dim=1,
        )
        side = self.size or x.shape[-1]
        grid = F.affine_grid(theta, [n, x.shape[1], side, side], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        x = self._photometric(x, uniform)
        x = normalise(x, self.mean, self.std)
        if self.erasing is not None:
            self.erasing.device = x.device  # noise drawn where the batch is
            x = self.erasing(x)
        return x

    def _photometric(self, x: torch.Tensor, uniform) -> torch.Tensor:
        """Grey, brightness, contrast and low resolution of a [0, 1] batch."""
        n = x.shape[0]

        def chosen(probability: float) -> torch.Tensor:
            return (uniform(0, 1) < probability).view(n, 1, 1, 1)

        if self.grayscale > 0 and x.shape[1] == 3:
            weights = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            grey = (x * weights).sum(1, keepdim=True).expand_as(x)
            x = torch.where(chosen(self.grayscale), grey, x)
        if self.brightness > 0:
            x = x * uniform(1 - self.brightness, 1 + self.brightness).view(n, 1, 1, 1)
        if self.contrast > 0:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * uniform(1 - self.contrast, 1 + self.contrast).view(n, 1, 1, 1) + mean
        if self.brightness > 0 or self.contrast > 0:
            x = x.clamp(0, 1)
        if self.low_resolution > 0 and x.shape[-1] > LOW_RESOLUTION_SIDES[0]:
            side = x.shape[-1]
            # One size a batch, from Python's random (seeded per epoch and rank, as
            # erasing's boxes): a draw on the device would wait for it every batch.
            small = random.randint(LOW_RESOLUTION_SIDES[0], min(LOW_RESOLUTION_SIDES[1], side - 1))
            blurred = F.interpolate(
                F.interpolate(x, size=small, mode="bilinear", antialias=True, align_corners=False),
                size=side,
                mode="bilinear",
                align_corners=False,
            )
            x = torch.where(chosen(self.low_resolution), blurred, x)
        return x


def mix_images(mixup: Mixup, x: torch.Tensor) -> float:
    """Mixup/CutMix of the batch ``x`` in place (``mode="batch"``: one draw for the
    whole batch, image ``i`` mixed with image ``n - 1 - i``, ``x.flip(0)``); returns the
    weight of the images' own targets, 1.0 when the batch is left as it is.

    The one call of a private timm method, ``Mixup._mix_batch``, kept here alone.
    ``Mixup.__call__`` one-hot encodes integer labels, and timm releases before 1.0.31
    (``pyproject.toml`` allows 1.0.15 on) have no public way to mix targets that are
    already distributions; ``_mix_batch`` is the image half of that call, the same
    code in every release from 1.0.15 to 1.0.31. ``tests/test_augment.py`` fails if a
    timm release changes its name, signature or behaviour. With timm >= 1.0.31 the
    public ``Mixup(..., multi_label=True, label_smoothing=0.0)(x, targets)`` gives the
    same images and targets (that test checks it where installed).
    """
    return float(mixup._mix_batch(x))


class SoftTargetMixer:
    """Label smoothing, then timm's batch Mixup/CutMix on images and soft targets.

    Hard labels go through timm's ``Mixup`` itself. Its public call one-hot encodes
    integer labels, so it cannot mix targets that are already distributions (the FER+
    ``probability`` vote policy); this uses its image mixing (``mix_images``) and mixes
    the distributions with the same weight.
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        prob: float = 0.0,
        switch_prob: float = 0.5,
        smoothing: float = 0.0,
    ):
        self.num_classes, self.smoothing = num_classes, smoothing
        active = prob > 0 and (mixup_alpha > 0 or cutmix_alpha > 0)
        self.mixup = (
            Mixup(
                mixup_alpha=mixup_alpha,
                cutmix_alpha=cutmix_alpha,
                prob=prob,
                switch_prob=switch_prob,
                mode="batch",
                num_classes=num_classes,
            )
            if active
            else None
        )

    def __call__(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix ``x`` in place; return it with the mixed targets (rows sum to 1)."""
        targets = targets * (1 - self.smoothing) + self.smoothing / self.num_classes
        if self.mixup is not None:
            lam = mix_images(self.mixup, x)
            targets = targets * lam + targets.flip(0) * (1 - lam)
        return x, targets
