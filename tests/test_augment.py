"""The one private timm call, ``Mixup._mix_batch`` behind ``mix_images``: these tests
fail if a timm release renames it or changes its signature or what it does."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from timm.data import Mixup

from fer_pipeline.modelling.augment import SoftTargetMixer, mix_images


def _batch(n: int = 6, side: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(0))


def test_mix_batch_is_there_with_the_signature_used():
    assert list(inspect.signature(Mixup._mix_batch).parameters) == ["self", "x"]


def test_mixup_mixes_each_image_with_its_mirror_in_place():
    mixup = Mixup(mixup_alpha=0.4, cutmix_alpha=0.0, prob=1.0, mode="batch", num_classes=7)
    x = _batch()
    before, pointer = x.clone(), x.data_ptr()
    np.random.seed(1)  # timm draws from NumPy
    lam = mix_images(mixup, x)
    assert type(lam) is float and 0 < lam < 1
    assert x.data_ptr() == pointer  # in place
    assert torch.allclose(x, before * lam + before.flip(0) * (1 - lam), atol=1e-6)


def test_cutmix_pastes_a_box_of_the_mirror_and_returns_the_area_left():
    mixup = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, prob=1.0, mode="batch", num_classes=7)
    x = _batch()
    before = x.clone()
    np.random.seed(2)
    lam = mix_images(mixup, x)
    assert type(lam) is float and 0 <= lam < 1
    pasted = (x != before).any(dim=(0, 1))  # the same box in every image and channel
    assert torch.equal(x[:, :, pasted], before.flip(0)[:, :, pasted])
    assert torch.equal(x[:, :, ~pasted], before[:, :, ~pasted])
    assert pasted.float().mean().item() == pytest.approx(1 - lam)


def test_an_unmixed_batch_is_left_as_it_is():
    mixup = Mixup(mixup_alpha=0.4, cutmix_alpha=1.0, prob=0.0, mode="batch", num_classes=7)
    x = _batch()
    before = x.clone()
    assert mix_images(mixup, x) == 1.0 and torch.equal(x, before)


@pytest.mark.skipif(
    "multi_label" not in inspect.signature(Mixup).parameters,
    reason="timm < 1.0.31 has no public call that mixes target distributions",
)
@pytest.mark.parametrize(("mixup_alpha", "cutmix_alpha"), [(0.4, 0.0), (0.0, 1.0), (0.2, 1.0)])
def test_the_same_as_timms_public_call_for_distributions(mixup_alpha, cutmix_alpha):
    """Where timm has it, ``Mixup(multi_label=True)`` on already-smoothed distributions
    gives exactly what ``SoftTargetMixer`` gives: the way to drop the private call."""
    targets = torch.softmax(torch.randn(6, 7, generator=torch.Generator().manual_seed(3)), 1)
    ours = SoftTargetMixer(7, mixup_alpha, cutmix_alpha, prob=1.0, smoothing=0.1)
    public = Mixup(
        mixup_alpha=mixup_alpha,
        cutmix_alpha=cutmix_alpha,
        prob=1.0,
        mode="batch",
        label_smoothing=0.0,
        num_classes=7,
        multi_label=True,
    )
    for seed in range(5):
        np.random.seed(seed)
        x_ours, t_ours = ours(_batch(), targets)
        np.random.seed(seed)
        x_public, t_public = public(_batch(), targets * 0.9 + 0.1 / 7)
        assert torch.equal(x_ours, x_public) and torch.allclose(t_ours, t_public, atol=1e-7)
