"""Temperature scaling (Guo et al., 2017): one scalar ``T`` divides the logits before the
softmax, fitted on val by minimising the negative log-likelihood. Dividing every logit
by the same positive number keeps their order, so the predicted class, and with it
accuracy, is unchanged; only the confidence moves."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

TEMPERATURE_RANGE = (0.05, 20.0)
"""The temperatures searched: far beyond what a trained classifier needs either way."""


def temperature_nll(logits: torch.Tensor, labels: torch.Tensor, temperatures: torch.Tensor):
    """The NLL summed over the images, for each of ``temperatures``."""
    scaled = logits.unsqueeze(0) / temperatures.view(-1, 1, 1)
    nll = F.cross_entropy(scaled.flatten(0, 1), labels.repeat(len(temperatures)), reduction="none")
    return nll.view(len(temperatures), -1).sum(1)


def fit_temperature(
    logits: torch.Tensor,
    labels: torch.Tensor,
    reduce: Callable[[torch.Tensor], torch.Tensor] = lambda totals: totals,
    steps: int = 65,
    rounds: int = 4,
) -> float:
    """The temperature minimising the NLL of ``logits`` (N, C) against integer
    ``labels`` (N,); 1.0 when there are no images.

    The NLL is convex in 1/T, so a grid over log T, narrowed around its best point
    ``rounds`` times, finds the minimum (to ~1e-5 in log T) without a gradient solver.
    Each grid is one pass, whose sums ``reduce`` may add up over ranks (DDP: every rank
    passes its share of val and gets the same temperature).
    """
    logits, labels = logits.double().cpu(), labels.long().cpu()
    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    best = 0.0
    for _ in range(rounds):
        grid = torch.linspace(low, high, steps, dtype=torch.float64)
        count = torch.tensor([float(len(labels))], dtype=torch.float64)
        totals = reduce(torch.cat([temperature_nll(logits, labels, grid.exp()), count]))
        if not totals[-1]:
            return 1.0
        index = int(totals[:-1].argmin())
        best = float(grid[index])
        low, high = float(grid[max(index - 1, 0)]), float(grid[min(index + 1, steps - 1)])
    return math.exp(best)
