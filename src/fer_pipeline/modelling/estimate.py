"""How long a run will train, measured on its first batches, and the warning a recipe
meant for a GPU gives when it starts on a CPU (README, "Environments").

The estimate is a measurement, not a table of recipes: ``SlowRecipeProbe`` times a few
training steps of the run's first epoch, after the first step (which pays one-off
costs), and extrapolates to every step of every epoch left. It times the steps alone
(no validation, no decoding before training), so it is a lower bound.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)

SLOW_RECIPE_SECONDS = 3 * 3600
"""A run on a CPU expected to train longer than this warns at its start. On 2 cores
`--env cpu` trains for about 35 minutes and `--env quick` for about 4, far below; the
default recipe (for a GPU) would train for about 3.5 hours (fp32, by the throughput
measured at 64 px) and `--env vit` for about a day and a half, above. Three hours is
what a user would not wait for at a desk without being told, and leaves `--env cpu`
room on a machine up to about 5 times slower."""

TIMED_STEPS = 3
"""Steps timed after the first: a few seconds on a CPU, enough to extrapolate."""

CPU_RECIPES = (
    "`kedro run --env cpu` trains a real model in about 41 minutes end to end on 2 cores, "
    "`kedro run --env quick` a first one in about 4 (docs/recipes.md)"
)


def expected_training_seconds(step_seconds: float, steps_per_epoch: int, epochs: int) -> float:
    """Seconds of training for ``epochs`` epochs of ``steps_per_epoch`` steps (the
    epoch's images over the batch size), at ``step_seconds`` a step."""
    return step_seconds * steps_per_epoch * epochs


def slow_recipe_warning(
    expected_seconds: float,
    device_type: str,
    recipe: str = "This recipe",
    threshold: float | None = None,
) -> str | None:
    """The warning for ``recipe`` expected to train ``expected_seconds`` on a device of
    ``device_type`` (``torch.device.type``), or ``None``: only a CPU run expected above
    ``threshold`` (default ``SLOW_RECIPE_SECONDS``) warns."""
    threshold = SLOW_RECIPE_SECONDS if threshold is None else threshold
    if device_type != "cpu" or expected_seconds <= threshold:
        return None
    hours = expected_seconds / 3600
    expected = f"{hours:.1f} hours" if hours < 48 else f"{hours / 24:.1f} days"
    return (
        f"{recipe} would train for about {expected} on this CPU (timed on its first "
        f"batches; evaluation not counted): it is meant for a GPU. On a CPU, {CPU_RECIPES}."
    )


class SlowRecipeProbe:
    """Called after each training step of a run's first epoch (on a CPU: its clock
    needs no synchronisation there): times steps 2 to ``1 + TIMED_STEPS`` (or to the
    epoch's end when it is shorter), then logs ``slow_recipe_warning`` once if there is
    one. Each call after that is one comparison: no cost."""

    def __init__(
        self, steps_per_epoch: int, epochs: int, device_type: str, recipe: str = "This recipe"
    ) -> None:
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.device_type, self.recipe = device_type, recipe
        self.last = min(1 + TIMED_STEPS, steps_per_epoch)
        self.calls, self.started = 0, 0.0
        self.message: str | None = None

    def __call__(self) -> None:
        self.calls += 1
        if self.calls == 1:
            self.started = time.perf_counter()
        elif self.calls == self.last:
            step_seconds = (time.perf_counter() - self.started) / (self.calls - 1)
            expected = expected_training_seconds(step_seconds, self.steps_per_epoch, self.epochs)
            self.message = slow_recipe_warning(expected, self.device_type, self.recipe)
            if self.message:
                logger.warning(self.message)
