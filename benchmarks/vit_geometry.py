"""ViT-Tiny at face-sized inputs: training images/s of each geometry (input side, patch
side) on this machine, and what an hour of training buys, beside the `cpu` recipe's CNN.

FER+ faces are 48 px and RAF-DB's 100 px; ViT-Tiny at 224 px with 16 px patches
upsamples them and pays for 196 tokens. Each geometry here is timed on the training
step alone (forward, backward, AdamW step in fp32; random images, so the data path and
a distillation teacher's forward are left out: ``train_throughput.py`` measures the
data path; a teacher's forward pass costs roughly a third of its own training step, by
the usual forward-to-backward ratio, not measured here).

    python benchmarks/vit_geometry.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from fer_pipeline.modelling.models import build_model

GEOMETRIES = [
    ("vit_tiny_patch16_224", 224, {}),
    ("vit_tiny_patch16_224", 112, {}),
    ("vit_tiny_patch16_224", 112, {"patch_size": 8}),
    ("vit_tiny_patch16_224", 96, {"patch_size": 8}),
    ("vit_tiny_patch16_224", 64, {"patch_size": 8}),
    ("deit_tiny_distilled_patch16_224", 64, {"patch_size": 8}),
    ("fer_resnet18", 56, {}),  # the cpu recipe's model
]
TRAIN_IMAGES = 34_217  # the cpu recipe's training set (FER+ vote distributions kept)


def images_per_second(name: str, size: int, kwargs: dict, batch: int, steps: int) -> float:
    """Training steps of ``batch`` random images per second, after two untimed steps."""
    torch.manual_seed(0)
    model = build_model(name, size, **kwargs).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (batch,))
    for step in range(steps + 2):
        if step == 2:
            started = time.perf_counter()
        out = model(x)
        logits = (out[0] + out[1]) / 2 if isinstance(out, tuple) else out
        loss = F.cross_entropy(logits, y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return batch * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads, batch {args.batch_size}, {args.steps} timed steps")
    print(
        "| model | input | patch | tokens | parameters | images/s | epoch (min) "
        "| epochs in 60 min |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, size, kwargs in GEOMETRIES:
        model = build_model(name, size, **kwargs)
        patch = kwargs.get("patch_size", 16) if "vit" in name or "deit" in name else None
        tokens = (size // patch) ** 2 if patch else "-"
        parameters = sum(p.numel() for p in model.parameters()) / 1e6
        rate = images_per_second(name, size, kwargs, args.batch_size, args.steps)
        epoch = TRAIN_IMAGES / rate / 60
        print(
            f"| {name} | {size} | {patch or '-'} | {tokens} | {parameters:.1f}M | {rate:.0f} "
            f"| {epoch:.1f} | {60 / epoch:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
