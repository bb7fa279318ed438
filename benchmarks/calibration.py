"""Calibration of a trained model on the project's val and test splits: temperature
scaling (what the training now does) against no scaling and vector scaling.

Fits the temperature on val afresh (so it also measures models trained before the
training fitted one), runs the evaluation node with it, and prints accuracy, NLL and
ECE on test before and after, plain and with TTA; then vector scaling (a scale and a
bias per class, fitted on val by L-BFGS) on the plain logits, to see whether it
measurably does better than one scalar. Writes the reliability diagrams to ``--out``.

    python benchmarks/calibration.py data/06_models/model.safetensors --env cpu
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from _scratch import PROJECT

from fer_pipeline.config.loader import project_config
from fer_pipeline.data.shards import Shards
from fer_pipeline.data.versions import latest_complete, latest_split
from fer_pipeline.modelling.calibration import fit_temperature
from fer_pipeline.modelling.evaluate import predict_shards
from fer_pipeline.modelling.metrics import calibration, nll
from fer_pipeline.modelling.models import ModelBundle
from fer_pipeline.pipelines.evaluation.config import EvaluationConfig
from fer_pipeline.pipelines.evaluation.nodes import evaluate_model


def vector_scaling(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-class scale and bias minimising the NLL (Guo et al.'s vector scaling)."""
    scale = torch.ones(logits.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(logits.shape[1], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([scale, bias], lr=0.5, max_iter=500)
    logits = logits.double()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(logits * scale + bias, labels)
        loss.backward()
        return loss

    optimiser.step(closure)
    return scale.detach(), bias.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a model.safetensors file or its versions folder")
    parser.add_argument("--project", type=Path, default=PROJECT, help="whose splits and conf")
    parser.add_argument("--env", default=None, help="Kedro environment of the evaluation settings")
    parser.add_argument(
        "--splits", type=Path, help="folder of val/ and test/ shards (default: the project's)"
    )
    parser.add_argument("--out", type=Path, default=Path("calibration"))
    args = parser.parse_args()

    path = args.model if args.model.is_file() else latest_complete(args.model)
    if path is None:
        raise SystemExit(f"{args.model}: no model file, and no complete version in it")
    bundle = ModelBundle.load(path)
    parameters = project_config(args.project, args.env)["parameters"]
    evaluation = EvaluationConfig.model_validate(parameters.get("evaluation") or {})
    if args.splits:
        val, test = Shards(args.splits / "val"), Shards(args.splits / "test")
    else:
        val, test = (Shards(latest_split(args.project, s)) for s in ("val", "test"))

    plain_options = {"device": evaluation.device, "precision": evaluation.precision}
    frame, views = predict_shards(bundle, val, **plain_options)
    val_logits, val_labels = views[0], torch.from_numpy(frame["label"].to_numpy())
    temperature = fit_temperature(val_logits, val_labels)
    print(
        f"{path}: stored temperature {bundle.spec.temperature:.3f}, fitted on val {temperature:.3f}"
    )
    calibrated = dataclasses.replace(
        bundle, spec=dataclasses.replace(bundle.spec, temperature=temperature)
    )
    report, _, _, reliability, _ = evaluate_model(calibrated, val, test, evaluation)

    print("\n| test | accuracy | NLL before | NLL after | ECE before | ECE after |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for kind, scores in report["test"].items():
        print(
            f"| {kind} | {scores['accuracy']:.2%} | {scores['nll_uncalibrated']:.3f} | "
            f"{scores['nll']:.3f} | {scores['ece_uncalibrated']:.3f} | {scores['ece']:.3f} |"
        )
    print(f"temperatures: plain {temperature:.3f}, TTA {report.get('tta_temperature', 1):.3f}")

    frame, views = predict_shards(bundle, test, **plain_options)
    test_logits, test_labels = views[0], frame["label"].to_numpy()
    scale, bias = vector_scaling(val_logits, val_labels)
    probs = (test_logits.double() * scale + bias).softmax(1).numpy()
    print(
        f"vector scaling, test: accuracy {(probs.argmax(1) == test_labels).mean():.2%}, "
        f"NLL {nll(test_labels, probs):.3f}, ECE {calibration(test_labels, probs)['ece']:.3f}"
    )

    args.out.mkdir(parents=True, exist_ok=True)
    reliability.savefig(args.out / "reliability.png", dpi=110)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}/reliability.png and report.json")


if __name__ == "__main__":
    main()
