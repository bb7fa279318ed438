"""Training throughput: the project's loop against a reference loop written the usual way.

Both train the same model at the same image size and batch size for the same number of
steps on real RAF-DB faces, with the same augmentations (flip, rotation, scale,
translation, CutMix/Mixup p=0.3):

- project: ``fer_pipeline.modelling.engine.fit``: images decoded once to a uint8 tensor,
  augmented in batches on the device, channels-last, AMP on CUDA (optionally compiled);
- reference: PIL decode + torchvision transforms per sample in a DataLoader, as the
  reference implementation did.

Prints images/s of each (the project's from its last epoch: 2nd, or 3rd when compiled, as
the switch back from validation to training recompiles once) and the ratio, then the
model's training step alone on one fixed batch: the ceiling of any data path. Each is
the best of ``--rounds`` runs, taken in turn. Runs without
Kedro, so it also runs on a bare GPU machine.

    python benchmarks/train_throughput.py --image-size 112            # CPU target: >= 1.5x
    python benchmarks/train_throughput.py --image-size 224 --steps 200  # GPU: >= 10x

With ``--nproc N`` it measures instead the project's loop in 1 and in N processes (DDP,
started by torch's elastic launcher as ``kedro run`` starts them), each process with
``--batch-size`` images a step and its share of the CPU cores, and prints both
figures and the scaling efficiency ``images/s(N) / (N x images/s(1))``.

    python benchmarks/train_throughput.py --model fer_resnet18 --image-size 48 --nproc 2
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from timm.data import Mixup
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from fer_pipeline.modelling.config import TrainConfig
from fer_pipeline.modelling.device import autocast, autocast_dtype, resolve_device
from fer_pipeline.modelling.distributed import close_ranks, init_ranks
from fer_pipeline.modelling.engine import fit
from fer_pipeline.modelling.models import build_model
from fer_pipeline.modelling.tensors import images_to_tensor


def real_faces(archive: Path | None, count: int) -> tuple[list[bytes], torch.Tensor]:
    """``count`` faces of a zip (``None``: RAF-DB's aligned faces), with random labels."""
    if archive is None:  # the project's raw_data: read with Kedro, which a GPU machine lacks
        from _scratch import RAF_FACES as archive
    with zipfile.ZipFile(archive) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))
        data = [z.read(names[i % len(names)]) for i in range(count)]
    return data, torch.randint(0, 7, (count,), generator=torch.Generator().manual_seed(0))


class PilFaces(torch.utils.data.Dataset):
    def __init__(self, images: list[bytes], labels: torch.Tensor, transform: T.Compose):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = Image.open(io.BytesIO(self.images[i])).convert("RGB")
        return self.transform(image), self.labels[i]


def timed_steps(batches: Iterator, args, config: TrainConfig, mixup: Mixup | None = None) -> float:
    """images/s of a textbook training step (forward, backward, AdamW) over
    ``args.steps`` batches of ``batches`` after ``args.warmup`` untimed ones; fetching
    each batch is part of the step."""
    device = resolve_device(args.device)
    dtype = autocast_dtype(args.precision, device)
    torch.manual_seed(0)
    model = build_model(config.model, args.image_size).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        x, y = (t.to(device, non_blocking=True) for t in next(batches))
        if mixup is not None:
            x, y = mixup(x, y)
        with autocast(device, dtype):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch_size / (time.perf_counter() - started)


def reference_throughput(images, labels, args, config: TrainConfig) -> float:
    """images/s of the textbook loop: PIL + torchvision transforms per sample in a
    DataLoader, timm's Mixup/CutMix on each batch."""
    transform = T.Compose(
        [
            T.Resize((args.image_size, args.image_size)),
            T.RandomHorizontalFlip(),
            T.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
            T.ToTensor(),
            T.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    loader = torch.utils.data.DataLoader(
        PilFaces(images, labels, transform),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        drop_last=True,
        pin_memory=resolve_device(args.device).type == "cuda",
        persistent_workers=args.workers > 0,
    )
    mixup = Mixup(mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.3, label_smoothing=0.1, num_classes=7)
    batches = itertools.chain.from_iterable(itertools.repeat(loader))  # epoch after epoch
    return timed_steps(batches, args, config, mixup)


def model_step_throughput(args, config: TrainConfig) -> float:
    """images/s of the same step on one fixed batch, with no data path: the ceiling
    that no input pipeline can beat."""
    device = resolve_device(args.device)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, 7, (args.batch_size,), device=device)
    return timed_steps(itertools.repeat((x, y)), args, config)


def _rank_images_per_second(
    recipe: dict, images: list[bytes], labels: list[int], threads: int
) -> float:
    """One rank of the scaling measurement: the project's loop, images/s of all ranks
    together in its last epoch."""
    config = TrainConfig(**recipe)
    init_ranks(config.device)
    torch.set_num_threads(threads)
    try:
        tensor = images_to_tensor(images, config.image_size)
        targets = torch.eye(7)[torch.tensor(labels)]
        _, history = fit(tensor, targets, tensor[:2], torch.tensor(labels[:2]), config)
    finally:
        close_ranks()
    return history[-1]["images_per_second"]


def scaling(args: argparse.Namespace, faces: list[bytes] | None = None) -> dict[str, float]:
    """images/s of the project's loop in 1 and ``args.nproc`` processes (the best of
    ``args.rounds`` each), each started by torch's elastic launcher; the same images
    and the same per-process batch."""
    config = _config(args)
    count = args.steps * args.batch_size * args.nproc
    if faces is None:
        images, labels = real_faces(args.data, count)
    else:
        images = [faces[i % len(faces)] for i in range(count)]
        labels = torch.randint(0, 7, (count,), generator=torch.Generator().manual_seed(0))
    cores = os.cpu_count() or 1
    measured = {}
    for nproc in (1, args.nproc):
        launch = LaunchConfig(
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=nproc,
            run_id=uuid.uuid4().hex,
            rdzv_backend="c10d",
            rdzv_endpoint="localhost:0",
            max_restarts=0,
            start_method="spawn",
        )
        threads = max(1, cores // nproc)
        measured[nproc] = max(
            elastic_launch(launch, _rank_images_per_second)(
                asdict(config), images, labels.tolist(), threads
            )[0]
            for _ in range(args.rounds)
        )
    efficiency = measured[args.nproc] / (args.nproc * measured[1])
    print(
        f"{args.model} at {args.image_size} px, batch {args.batch_size} per process, "
        f"{_device_name(args.device)}, precision {args.precision}, best of {args.rounds} rounds"
    )
    print(f"1 process:   {measured[1]:8.1f} images/s ({cores} threads)")
    print(
        f"{args.nproc} processes: {measured[args.nproc]:8.1f} images/s "
        f"({max(1, cores // args.nproc)} threads each)"
    )
    print(f"scaling efficiency: {efficiency:.0%} ({measured[args.nproc] / measured[1]:.2f}x)")
    return {
        "images_per_second_1": measured[1],
        f"images_per_second_{args.nproc}": measured[args.nproc],
        "scaling_efficiency": efficiency,
    }


def _device_name(device_setting: str) -> str:
    device = resolve_device(device_setting)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{os.cpu_count()}-core CPU"


def _config(args: argparse.Namespace) -> TrainConfig:
    """The project loop's recipe for the measurement."""
    return TrainConfig(
        model=args.model,
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=3 if args.compile else 2,  # compiled: epoch 2 recompiles for train mode
        warmup_epochs=0.5,
        mix_prob=0.3,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        ema_decay=0.0,
    )


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed reference steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="reference DataLoader workers",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the project loop")
    parser.add_argument(
        "--data", type=Path, help="a zip of faces (default: RAF-DB's aligned faces in raw_data)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs of each loop; best kept")
    parser.add_argument(
        "--nproc", type=int, default=1, help="> 1: the project loop in 1 and NPROC processes"
    )
    return parser


def measure(args: argparse.Namespace, faces: list[bytes] | None = None) -> dict[str, float]:
    """images/s of the project loop, the reference loop and the model step alone (the
    best of ``args.rounds`` each), on ``faces`` (encoded images) or RAF-DB's zip."""
    config = _config(args)
    count = args.steps * args.batch_size
    if faces is None:
        images, labels = real_faces(args.data, count)
    else:
        images = [faces[i % len(faces)] for i in range(count)]
        labels = torch.randint(0, 7, (count,), generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    tensor = images_to_tensor(images, args.image_size)
    decode = time.perf_counter() - started
    project, reference, ceiling = 0.0, 0.0, 0.0
    for _ in range(args.rounds):  # the best of each: a shared machine's speed drifts
        _, history = fit(tensor, torch.eye(7)[labels], tensor[:2], labels[:2], config)
        project = max(project, history[-1]["images_per_second"])
        reference = max(reference, reference_throughput(images, labels, args, config))
        ceiling = max(ceiling, model_step_throughput(args, config))
    name = _device_name(args.device)
    print(
        f"{args.model} at {args.image_size} px, batch {args.batch_size}, {args.steps} steps, "
        f"{name}, precision {args.precision}, compile {args.compile}, "
        f"best of {args.rounds} rounds"
    )
    print(
        f"project loop:   {project:8.1f} images/s "
        f"(decoding {len(images)} images once: {decode:.1f} s)"
    )
    print(f"reference loop: {reference:8.1f} images/s ({args.workers} DataLoader workers)")
    print(f"ratio:          {project / reference:8.2f}x")
    print(
        f"model step alone, no data path: {ceiling:.1f} images/s, so no loop can beat "
        f"{ceiling / reference:.2f}x here (the project's loop reaches {project / ceiling:.0%})"
    )
    return {
        "device": name,
        "project_images_per_second": project,
        "reference_images_per_second": reference,
        "ratio": project / reference,
        "model_step_images_per_second": ceiling,
    }


if __name__ == "__main__":
    arguments = parser().parse_args()
    scaling(arguments) if arguments.nproc > 1 else measure(arguments)
