"""The registry's policy: every trained model registered, and the ``champion`` alias
moved only to a version that beats the champion on the same test set (``challenger``
otherwise)."""

from __future__ import annotations

import logging
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


def register(model_uri: str, name: str, weights_digest: str) -> dict[str, Any]:
    """Registers the logged model at ``model_uri`` under ``name``; returns what the
    evaluation needs to find it again."""
    version = mlflow.register_model(model_uri, name)
    logger.info("Registered %s as %s version %s", model_uri, name, version.version)
    return {
        "name": name,
        "version": str(version.version),
        "model_uri": model_uri,
        "run_id": version.run_id,
        "weights_digest": weights_digest,
    }


def promote(registration: dict[str, Any], accuracy: float, test_digest: str) -> dict[str, Any]:
    """Sets ``champion`` on the registered version when its test accuracy beats the
    current champion's on the same test set (same digest), ``challenger`` otherwise;
    returns the decision with both figures. The figures stay on each version as tags."""
    client = mlflow.MlflowClient()
    name, version = registration["name"], registration["version"]
    client.set_model_version_tag(name, version, "test_accuracy", str(accuracy))
    client.set_model_version_tag(name, version, "test_digest", test_digest)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    decision: dict[str, Any] = {
        "name": name,
        "version": version,
        "test_accuracy": accuracy,
        "test_digest": test_digest,
        "champion_version": str(champion.version) if champion else None,
        "champion_test_accuracy": None,
    }
    if champion is None:
        alias, reason = CHAMPION, "no champion yet"
    elif str(champion.version) == version:
        alias, reason = CHAMPION, "already the champion"
    elif champion.tags.get("test_digest") != test_digest:
        alias, reason = CHALLENGER, "the champion was scored on another test set"
    else:
        best = float(champion.tags["test_accuracy"])
        decision["champion_test_accuracy"] = best
        if accuracy > best:
            alias, reason = CHAMPION, f"test accuracy {accuracy:.4f} > champion's {best:.4f}"
        else:
            alias, reason = CHALLENGER, f"test accuracy {accuracy:.4f} <= champion's {best:.4f}"
    client.set_registered_model_alias(name, alias, version)
    logger.info("%s version %s is now %s: %s", name, version, alias, reason)
    return decision | {"alias": alias, "reason": reason}
