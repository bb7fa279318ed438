"""The expected training time, measured on a run's first batches, and the warning a
recipe meant for a GPU gives when it starts on a CPU."""

from __future__ import annotations

import logging

import torch

from fer_pipeline.modelling import estimate
from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.modelling.engine import fit
from fer_pipeline.modelling.estimate import (
    SLOW_RECIPE_SECONDS,
    SlowRecipeProbe,
    expected_training_seconds,
    slow_recipe_warning,
)


def test_the_expected_time_is_every_step_of_every_epoch():
    assert expected_training_seconds(0.5, steps_per_epoch=146, epochs=60) == 0.5 * 146 * 60


def test_only_a_cpu_run_above_the_threshold_warns():
    above = SLOW_RECIPE_SECONDS + 1
    assert slow_recipe_warning(SLOW_RECIPE_SECONDS, "cpu") is None
    assert slow_recipe_warning(above, "cuda") is None  # a GPU run is what the recipe is for
    message = slow_recipe_warning(above, "cpu", "This recipe (fer_resnet18, 64 px, 60 epochs)")
    assert message.startswith("This recipe (fer_resnet18, 64 px, 60 epochs) would train")
    assert "3.0 hours" in message and "meant for a GPU" in message
    assert "`kedro run --env cpu`" in message and "`kedro run --env quick`" in message
    assert "36.0 hours" in slow_recipe_warning(36 * 3600, "cpu")
    assert "3.0 days" in slow_recipe_warning(72 * 3600, "cpu")
    assert slow_recipe_warning(100, "cpu", threshold=99) is not None


def _probe_with_clock(monkeypatch, step_seconds: float, steps_per_epoch: int, calls: int):
    """A probe called ``calls`` times, whose steps take ``step_seconds``: the clock
    gives two readings, after step 1 and after the last timed step, then none."""
    timed = min(1 + estimate.TIMED_STEPS, steps_per_epoch) - 1
    ticks = iter([100.0, 100.0 + timed * step_seconds])
    monkeypatch.setattr(estimate.time, "perf_counter", lambda: next(ticks))
    probe = SlowRecipeProbe(steps_per_epoch, epochs=60, device_type="cpu")
    for _ in range(calls):
        probe()
    return probe


def test_the_probe_times_the_steps_after_the_first(monkeypatch, caplog):
    """Steps 2-4 of 146 at 2 s each: 146 x 60 x 2 s = 4.9 h, above 3 h: one warning;
    the calls after the timed steps do nothing (the clock is not read again)."""
    with caplog.at_level(logging.WARNING, logger=estimate.__name__):
        probe = _probe_with_clock(monkeypatch, 2.0, steps_per_epoch=146, calls=4)
        for _ in range(100):
            probe()  # would raise StopIteration if it read the clock
    assert "4.9 hours" in probe.message
    assert [r.getMessage() for r in caplog.records] == [probe.message]


def test_a_fast_run_or_a_one_step_epoch_does_not_warn(monkeypatch):
    assert _probe_with_clock(monkeypatch, 0.5, steps_per_epoch=146, calls=4).message is None
    assert _probe_with_clock(monkeypatch, 1e6, steps_per_epoch=1, calls=1).message is None


def test_a_cpu_training_run_logs_the_warning_at_its_start(monkeypatch, caplog):
    """A tiny fit of the default recipe on the CPU (64 images at 16 px, 8 steps an
    epoch, 2 epochs), with the threshold at 0 s: the estimate is above it, and the
    warning is logged once, in the first epoch; it expects about 0.0 hours, far below
    the real threshold, at which this run would not warn."""
    monkeypatch.setattr(estimate, "SLOW_RECIPE_SECONDS", 0)
    torch.manual_seed(0)
    images = torch.randint(0, 255, (64, 3, 16, 16), dtype=torch.uint8)
    targets = torch.eye(7)[torch.arange(64) % 7]
    config = TrainConfig(image_size=16, epochs=2, batch_size=8, warmup_epochs=0, device="cpu")
    with caplog.at_level(logging.WARNING, logger=estimate.__name__):
        fit(images, targets, images[:8], targets[:8].argmax(1), config)
    warnings = [r.getMessage() for r in caplog.records if r.name == estimate.__name__]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "This recipe (fer_resnet18, 16 px, 2 epochs) would train for about 0.0 hours"
    )
    assert "`kedro run --env cpu`" in warnings[0]
