"""The SER head: the paper's feed-forward classifier over utterance features.

A head directory holds `head.safetensors` (network weights and the feature scaler; no pickle)
and `head.json` (classes, feature set, architecture, training provenance and report). A head may
average several networks of the same recipe trained from different seeds (head.json "members").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models import ARTIFACTS_DIR

WEIGHTS_FILE = "head.safetensors"
META_FILE = "head.json"
SHIPPED_LITE_HEAD = ARTIFACTS_DIR / "ser_lite"
# The lite profile's side-normalised reading (per_side head; worker/engine/side_reading.py)
SHIPPED_LITE_SIDE_HEAD = ARTIFACTS_DIR / "ser_lite_side"
# How features are standardised before the head's own scaler (head.json "normalization"):
#   per_utterance  each utterance on its own (the default; what predict_proba does)
#   per_side       the caller z-scores all utterances of one side of a job (every source, or every target) with
#                  that side's own mean and std first: use predict_proba_side(all features of the side)
NORMALIZATIONS = ("per_utterance", "per_side")
# The layer sequence of the head's network (head.json "architecture"):
#   paper      what the paper states: every hidden layer Linear -> ReLU -> Dropout, in the stated order
#              (64 then 32 for the paper's recipe: in->64->32->K)
#   nkululeko  what nkululeko, the toolkit the paper used, builds from the same configuration: it sorts the hidden
#              layers by width and keeps its layers in a dict keyed by kind, so the second ReLU overwrites the first
#              and only one ReLU (after the first Linear) and one Dropout (before the output Linear) remain:
#              in->32 -> ReLU -> 32->64 -> Dropout -> 64->K for (64, 32)
ARCHITECTURES = ("paper", "nkululeko")


class HeadError(ValueError):
    """A head directory that cannot be loaded or does not fit the features."""


def build_network(
    n_features: int, n_classes: int, hidden: tuple[int, ...], dropout: float, architecture: str = "paper"
) -> nn.Sequential:
    """The head's feed-forward network (see ARCHITECTURES for the two layer sequences)."""
    if architecture not in ARCHITECTURES:
        raise HeadError(f"unknown architecture {architecture!r} (this version knows {', '.join(ARCHITECTURES)})")
    layers: list[nn.Module] = []
    width = n_features
    if architecture == "paper":
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU(), nn.Dropout(dropout)]
            width = units
    else:
        for index, units in enumerate(sorted(hidden)):
            layers.append(nn.Linear(width, units))
            if index == 0:
                layers.append(nn.ReLU())
            width = units
        if hidden:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


class MeanOfMembers(nn.Module):
    """An ensemble of networks trained alike from different seeds. Its output is the log of the members'
    mean class probabilities, so softmax (as the head applies to logits) gives exactly that mean."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = torch.stack([torch.softmax(member(x).double(), dim=1) for member in self.members]).mean(0)
        return torch.log(probabilities)


def build_head_network(
    n_features: int,
    n_classes: int,
    hidden: tuple[int, ...],
    dropout: float,
    members: int = 1,
    architecture: str = "paper",
) -> nn.Module:
    if members == 1:
        return build_network(n_features, n_classes, hidden, dropout, architecture)
    return MeanOfMembers([build_network(n_features, n_classes, hidden, dropout, architecture) for _ in range(members)])


@dataclass
class SerHead:
    classes: list[str]
    feature_set: str
    hidden: tuple[int, ...]
    dropout: float
    network: nn.Sequential
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    metadata: dict = field(default_factory=dict)
    architecture: str = "paper"

    @classmethod
    def new(
        cls,
        n_features: int,
        classes: list[str],
        feature_set: str,
        hidden=(64, 32),
        dropout=0.3,
        scaler_mean=None,
        scaler_scale=None,
        metadata=None,
        members: int = 1,
        architecture: str = "paper",
    ) -> SerHead:
        network = build_head_network(n_features, len(classes), tuple(hidden), dropout, members, architecture)
        mean = np.zeros(n_features, np.float32) if scaler_mean is None else np.asarray(scaler_mean, np.float32)
        scale = np.ones(n_features, np.float32) if scaler_scale is None else np.asarray(scaler_scale, np.float32)
        return cls(
            list(classes),
            feature_set,
            tuple(hidden),
            float(dropout),
            network,
            mean,
            scale,
            dict(metadata or {}),
            architecture,
        )

    @property
    def n_features(self) -> int:
        return int(self.scaler_mean.shape[0])

    @property
    def members(self) -> int:
        """Networks whose probabilities the head averages (1: the paper's single network)."""
        return len(self.network.members) if isinstance(self.network, MeanOfMembers) else 1

    @property
    def normalization(self) -> str:
        """ "per_utterance" (default) or "per_side" (see NORMALIZATIONS)."""
        return str(self.metadata.get("normalization", "per_utterance"))

    def standardise(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, np.float32) - self.scaler_mean) / self.scaler_scale

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """(N, K) class probabilities for (N, n_features) raw features, each row on its own.

        A per_side head refuses: its input must first be standardised with the statistics of the
        whole side (predict_proba_side).
        """
        if self.normalization != "per_utterance":
            raise HeadError(
                f"this head was trained with {self.normalization} normalisation: pass all features of one "
                "side of a job to predict_proba_side() instead of predicting utterances one by one"
            )
        return self._predict(features)

    def predict_proba_side(self, features: np.ndarray) -> np.ndarray:
        """(N, K) probabilities for all N utterances of one side of a job.

        per_utterance heads: the same as predict_proba (rows independent). per_side heads: each
        feature is z-scored with the mean and standard deviation over these N rows (population std;
        a constant feature becomes 0), then the head's scaler and network apply. Needs N >= 2.
        """
        if self.normalization == "per_utterance":
            return self.predict_proba(features)
        features = np.atleast_2d(np.asarray(features, np.float32))
        if features.shape[0] < 2:
            raise HeadError("per_side normalisation needs at least 2 utterances on a side")
        return self._predict(side_standardise(features))

    def _predict(self, features: np.ndarray) -> np.ndarray:
        features = np.atleast_2d(np.asarray(features, np.float32))
        if features.shape[1] != self.n_features:
            raise HeadError(f"head expects {self.n_features} features ({self.feature_set}), got {features.shape[1]}")
        self.network.eval()
        rows = torch.from_numpy(self.standardise(features))
        with torch.no_grad():
            # one row at a time: BLAS rounds the same row differently in batches of different sizes (last bits of
            # float32), and a file's probabilities must not depend on which files shared its batch (the CLI, the
            # service's chunks and a re-run must give identical reports). ~0.1 ms per row.
            logits = (
                torch.cat([self.network(rows[i : i + 1]) for i in range(len(rows))])
                if len(rows)
                else torch.zeros((0, len(self.classes)))
            )
            return torch.softmax(logits.double(), dim=1).numpy()

    def save(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"network.{k}": v.detach().contiguous() for k, v in self.network.state_dict().items()}
        tensors["scaler.mean"] = torch.from_numpy(self.scaler_mean.copy())
        tensors["scaler.scale"] = torch.from_numpy(self.scaler_scale.copy())
        save_file(tensors, str(directory / WEIGHTS_FILE))
        meta = dict(
            self.metadata,
            classes=self.classes,
            feature_set=self.feature_set,
            hidden=list(self.hidden),
            dropout=self.dropout,
            n_features=self.n_features,
            architecture=self.architecture,
        )
        if self.members > 1:
            meta["members"] = self.members
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory) -> SerHead:
        directory = Path(directory)
        weights, meta_path = directory / WEIGHTS_FILE, directory / META_FILE
        if not weights.is_file() or not meta_path.is_file():
            raise HeadError(f"{directory} is not a SER head directory (needs {WEIGHTS_FILE} and {META_FILE})")
        meta = json.loads(meta_path.read_text())
        if meta.get("normalization", "per_utterance") not in NORMALIZATIONS:
            raise HeadError(
                f"{directory}: unknown normalization {meta['normalization']!r} "
                f"(this version knows {', '.join(NORMALIZATIONS)})"
            )
        tensors = load_file(str(weights))
        if meta.get("architecture", "paper") not in ARCHITECTURES:
            raise HeadError(
                f"{directory}: unknown architecture {meta['architecture']!r} "
                f"(this version knows {', '.join(ARCHITECTURES)})"
            )
        own = {"classes", "feature_set", "hidden", "dropout", "n_features", "members", "architecture"}
        head = cls.new(
            int(meta["n_features"]),
            meta["classes"],
            meta["feature_set"],
            tuple(meta["hidden"]),
            float(meta["dropout"]),
            tensors["scaler.mean"].numpy(),
            tensors["scaler.scale"].numpy(),
            {k: v for k, v in meta.items() if k not in own},
            members=int(meta.get("members", 1)),
            architecture=meta.get("architecture", "paper"),
        )
        state = {k.removeprefix("network."): v for k, v in tensors.items() if k.startswith("network.")}
        try:
            head.network.load_state_dict(state)
        except RuntimeError as error:
            raise HeadError(f"{directory}: {WEIGHTS_FILE} does not fit {META_FILE}: {error}") from None
        head.network.eval()
        return head

    def sha256(self) -> str:
        """Hash of the weights and class list: what pins this head in a report signature."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.network.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().numpy().tobytes())
        digest.update(self.scaler_mean.tobytes())
        digest.update(self.scaler_scale.tobytes())
        digest.update(json.dumps(self.classes).encode())
        if self.normalization != "per_utterance":  # changes the outputs; per_utterance hashes stay as they were
            digest.update(f"normalization:{self.normalization}".encode())
        if self.architecture != "paper":  # the same tensors mean a different function; paper hashes stay as they were
            digest.update(f"architecture:{self.architecture}".encode())
        return digest.hexdigest()


def side_standardise(features: np.ndarray) -> np.ndarray:
    """z-score each column with the rows' own mean and population std (constant columns -> 0)."""
    features = np.atleast_2d(np.asarray(features, np.float64))
    std = features.std(axis=0)
    return ((features - features.mean(axis=0)) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)


def entropy_uncertainty(probs: np.ndarray) -> np.ndarray:
    """Entropy of each row of probabilities divided by log K: 0 = certain, 1 = uniform."""
    probs = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    k = probs.shape[1]
    if k < 2:
        return np.zeros(probs.shape[0])
    return -(probs * np.log(probs)).sum(axis=1) / np.log(k)
