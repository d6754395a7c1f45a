"""SER head fitting, the paper's recipe: scaler on the training split, ClusterCentroids balancing of the
training split only, a feed-forward network trained with Adam, the epoch kept by dev UA (never test), and
the scores of every split (UA and WA from core.metrics)."""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from core.metrics import MetricUndefined, ua_codes, wa_codes
from models.ser.data import SPLITS, TrainingError

BALANCE_CHOICES = ("clustercentroids", "none")


def balance_training_set(
    features: np.ndarray, targets: np.ndarray, method: str, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """ClusterCentroids under-sampling (every class reduced to the minority class's count), or nothing."""
    if method == "none":
        return features, targets
    if method != "clustercentroids":
        raise TrainingError(f"unknown balancing {method!r} (choose {', '.join(BALANCE_CHOICES)})")
    from imblearn.under_sampling import ClusterCentroids
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    counts = np.bincount(targets)
    if np.count_nonzero(counts) < 2:
        raise TrainingError("balancing needs at least two classes in the training split")
    sampler = ClusterCentroids(random_state=seed, estimator=KMeans(n_init=1, random_state=seed))
    with warnings.catch_warnings():  # identical feature rows (duplicate recordings) give fewer distinct clusters
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        balanced_x, balanced_y = sampler.fit_resample(features, targets)
    return np.asarray(balanced_x, np.float32), np.asarray(balanced_y, np.int64)


@dataclass
class TrainConfig:
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.3
    batch_size: int = 2
    max_epochs: int = 80
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    seed: int = 42
    ensemble: int = 1  # networks trained from seeds seed, seed+1, ...; the head averages their probabilities
    speed_perturb: tuple[float, ...] = ()  # extra speed-perturbed copies of the training split (e.g. 0.9, 1.1)
    architecture: str = "paper"  # or "nkululeko" (models.ser.head.ARCHITECTURES)


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """UA (mean recall over classes present in y_true), WA (accuracy), K x K confusion (rows = gold)."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    try:
        ua, wa = ua_codes(y_true, y_pred, n_classes), wa_codes(y_true, y_pred)
    except MetricUndefined:  # no utterances in this split
        ua = wa = None
    return {"ua": ua, "wa": wa, "n": int(len(y_true)), "confusion": confusion.tolist()}


def predict_classes(network, standardised: np.ndarray) -> np.ndarray:
    import torch

    network.eval()
    with torch.no_grad():
        return network(torch.from_numpy(np.ascontiguousarray(standardised, np.float32))).argmax(dim=1).numpy()


def _adam(network, config: TrainConfig):
    import torch

    try:  # the fused CPU kernel is about twice as fast for batch size 2 (deterministic, same update rule)
        return torch.optim.Adam(
            network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
        )
    except (RuntimeError, TypeError):
        return torch.optim.Adam(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)


@dataclass
class FitResult:
    network: object
    kept_epoch: int
    history: list[dict]
    optimiser_class_counts: list[int]  # labels the optimiser saw per epoch (counted from the batches)
    seconds: float


def fit_network(
    train_x: np.ndarray,
    train_y: np.ndarray,
    dev_x: np.ndarray,
    dev_y: np.ndarray,
    n_classes: int,
    config: TrainConfig,
    progress: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train the feed-forward net on standardised features; keep the epoch with the best dev UA (first on ties)."""
    import torch
    from torch import nn

    from models.ser.head import build_network

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64x32 MLP with batch size 2 runs fastest on one thread
    try:
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        network = build_network(train_x.shape[1], n_classes, tuple(config.hidden), config.dropout, config.architecture)
        optimiser = _adam(network, config)
        loss_function = nn.CrossEntropyLoss()
        xs = torch.from_numpy(np.ascontiguousarray(train_x, np.float32))
        ys = torch.from_numpy(np.asarray(train_y, np.int64))
        best_ua, best_state, kept, history = -1.0, None, 0, []
        seen = np.zeros(n_classes, np.int64)
        started = time.monotonic()
        for epoch in range(1, config.max_epochs + 1):
            network.train()
            order = torch.randperm(len(ys), generator=generator)
            total, epoch_seen = 0.0, np.zeros(n_classes, np.int64)
            for start in range(0, len(order), config.batch_size):
                index = order[start : start + config.batch_size]
                batch_y = ys[index]
                epoch_seen += np.bincount(batch_y.numpy(), minlength=n_classes)
                loss = loss_function(network(xs[index]), batch_y)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += loss.item() * len(index)
            if epoch == 1:
                seen = epoch_seen
            dev = classification_scores(dev_y, predict_classes(network, dev_x), n_classes)
            improved = dev["ua"] is not None and dev["ua"] > best_ua
            if improved:
                best_ua, kept = dev["ua"], epoch
                best_state = copy.deepcopy(network.state_dict())
            row = {
                "epoch": epoch,
                "train_loss": total / len(ys),
                "dev_ua": dev["ua"],
                "dev_wa": dev["wa"],
                "best_epoch": kept,
            }
            history.append(row)
            if progress:
                progress(dict(row, max_epochs=config.max_epochs, improved=improved))
        network.load_state_dict(best_state)
        network.eval()
        return FitResult(network, kept, history, seen.tolist(), time.monotonic() - started)
    finally:
        torch.set_num_threads(threads)


@dataclass
class RunResult:
    balance: str
    head: object  # SerHead
    fit: FitResult  # the first (or only) network's training
    metrics: dict  # split -> classification_scores (train = the unbalanced training split)
    train_class_counts: list[int]
    member_fits: list[FitResult] = field(default_factory=list)  # every network of an ensemble, fit first


def standardise_sides(features: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """per_side normalisation: z-score every side (group of utterances evaluated together) with its own statistics."""
    from models.ser.head import side_standardise

    out = np.empty_like(features, dtype=np.float32)
    for side in np.unique(sides):
        mask = sides == side
        if mask.sum() < 2:
            raise TrainingError(f"per_side normalisation: side {side!r} has fewer than 2 utterances")
        out[mask] = side_standardise(features[mask])
    return out


def train_one(
    features: np.ndarray,
    targets: np.ndarray,
    splits: np.ndarray,
    classes: Sequence[str],
    *,
    feature_set: str,
    balance: str,
    config: TrainConfig,
    metadata: dict | None = None,
    progress: Callable[[dict], None] | None = None,
    normalization: str = "per_utterance",
    sides: np.ndarray | None = None,
    augmented: np.ndarray | None = None,
) -> RunResult:
    """Scale on the training split, balance it, train, keep the dev-best epoch; return the head and its scores.

    normalization="per_side" first z-scores each group of `sides` (default: one per split) with its own
    statistics, as the pipeline must do at inference with each side of a job. `augmented` marks extra
    training rows (e.g. speed-perturbed copies): used for the scaler, balancing and fitting, never scored.
    """
    from models.ser.head import MeanOfMembers, SerHead

    if normalization == "per_side":
        features = standardise_sides(features, splits if sides is None else np.asarray(sides))
    elif normalization != "per_utterance":
        raise TrainingError(f"unknown normalization {normalization!r} (choose per_utterance or per_side)")
    metadata = dict(metadata or {}, normalization=normalization)
    train, dev = splits == "train", splits == "dev"
    mean = features[train].mean(axis=0)
    scale = features[train].std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0).astype(np.float32)
    head = SerHead.new(
        features.shape[1],
        list(classes),
        feature_set,
        config.hidden,
        config.dropout,
        mean.astype(np.float32),
        scale,
        metadata,
        architecture=config.architecture,
    )
    standardised = head.standardise(features)
    train_x, train_y = standardised[train], targets[train]
    balanced_x, balanced_y = balance_training_set(train_x, train_y, balance, config.seed)
    fits = [
        fit_network(
            balanced_x,
            balanced_y,
            standardised[dev],
            targets[dev],
            len(classes),
            replace(config, seed=config.seed + member),
            progress,
        )
        for member in range(max(1, config.ensemble))
    ]
    head.network = fits[0].network if len(fits) == 1 else MeanOfMembers([f.network for f in fits])
    metrics = {}
    original = np.ones(len(splits), bool) if augmented is None else ~np.asarray(augmented, bool)
    for split in SPLITS:
        mask = (splits == split) & original
        if mask.any():
            metrics[split] = classification_scores(
                targets[mask], predict_classes(head.network, standardised[mask]), len(classes)
            )
    return RunResult(balance, head, fits[0], metrics, np.bincount(train_y, minlength=len(classes)).tolist(), fits)
