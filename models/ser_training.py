"""SER head training: the paper's recipe (Atmaja, Shirai, Sakti), its Table 2, confusion matrices.

Recipe: a feed-forward network with two hidden layers of 64 and 32 units, ReLU, dropout 0.3,
batch size 2, at most 80 epochs, the epoch kept by unweighted accuracy (UA) on the dev split
(never on test), class imbalance handled by imbalanced-learn's ClusterCentroids on the training
split only. Features are standardised with statistics of the (unbalanced) training split; the
scaler travels in the head.

Architecture (TrainConfig.architecture, head.json "architecture"): `paper` (default) is what the
paper states, in->64->ReLU->Dropout->32->ReLU->Dropout->K. `nkululeko` is what nkululeko, the toolkit
the paper used, actually builds from the same configuration: Linear(in,32) -> ReLU -> Linear(32,64)
-> Dropout(0.3) -> Linear(64,K) (it sorts the layers by width, and its second ReLU overwrites the
first under the same key), offered for reproduction.

Entry points: `load_manifest` / `concat_datasets` (data), `extract_features` (cached features),
`train_ser` (the whole recipe: both balancing settings when asked, report, head on disk).
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from models.batching import file_sha256

SPLITS = ("train", "dev", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "dev": "dev", "valid": "dev", "validation": "dev",
                 "val": "dev", "devel": "dev", "development": "dev", "test": "test", "eval": "test"}
BALANCE_CHOICES = ("clustercentroids", "none")
MELD_CLASSES = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
DROP = "-"  # label-map target meaning "leave these utterances out"
NKULULEKO_NOTE = ("The paper states hidden layers of 64 and 32 units, ReLU and dropout 0.3; architecture 'paper' "
                  "builds in->64->ReLU->Dropout->32->ReLU->Dropout->K. Nkululeko, the toolkit the paper used, builds "
                  "Linear(in,32) -> ReLU -> Linear(32,64) -> Dropout(0.3) -> Linear(64,K) from the same configuration "
                  "(it sorts the layers by width and its second ReLU overwrites the first under the same key): "
                  "architecture 'nkululeko' (train-ser --architecture nkululeko).")


class TrainingError(ValueError):
    """Bad training input (manifest, labels, splits, features); the message is for the user."""


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

@dataclass
class Dataset:
    """Utterances of one or more manifests with labels, speakers, splits and a corpus name each."""

    paths: list[Path]
    labels: np.ndarray          # str labels after the label map
    speakers: np.ndarray        # str ("" when the manifest has no speaker column)
    splits: np.ndarray          # "train" / "dev" / "test"
    corpora: np.ndarray         # str: which manifest (corpus) each utterance came from
    split_info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, mask: np.ndarray) -> "Dataset":
        mask = np.asarray(mask)
        index = np.flatnonzero(mask) if mask.dtype == bool else mask
        return Dataset([self.paths[i] for i in index], self.labels[index], self.speakers[index],
                       self.splits[index], self.corpora[index], dict(self.split_info))

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            labels, counts = np.unique(self.labels[self.splits == split], return_counts=True)
            out[split] = {str(k): int(v) for k, v in zip(labels, counts)}
        return out


def parse_label_map(items: Iterable[str] | dict | None) -> dict[str, str]:
    """`["calm=neutral", "other=-"]` -> {"calm": "neutral", "other": "-"} ("-" drops the label)."""
    if items is None:
        return {}
    if isinstance(items, dict):
        return {str(k).strip().lower(): str(v).strip().lower() for k, v in items.items()}
    mapping = {}
    for item in items:
        if "=" not in item:
            raise TrainingError(f"label map entry {item!r} is not FROM=TO (use TO='-' to drop a label)")
        source, target = (part.strip().lower() for part in item.split("=", 1))
        if not source or not target:
            raise TrainingError(f"label map entry {item!r} is not FROM=TO")
        mapping[source] = target
    return mapping


def speaker_independent_split(speakers: Sequence[str], seed: int = 42,
                              fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> tuple[np.ndarray, dict]:
    """Assign whole speakers to train/dev/test (shuffled with `seed`), about `fractions` of speakers each.

    Needs at least three speakers; returns the split of every utterance and the speaker lists.
    """
    speakers = np.asarray([str(s) for s in speakers])
    unique = sorted(set(speakers.tolist()))
    if len(unique) < 3:
        raise TrainingError(f"a speaker-independent split needs at least 3 speakers, the manifest has {len(unique)}; "
                            "add a split column (train/dev/test)")
    order = np.random.default_rng(seed).permutation(len(unique))
    shuffled = [unique[i] for i in order]
    n_dev = max(1, int(round(fractions[1] * len(unique))))
    n_test = max(1, int(round(fractions[2] * len(unique))))
    n_train = len(unique) - n_dev - n_test
    if n_train < 1:
        n_train, n_dev, n_test = 1, 1, len(unique) - 2
    groups = {"train": sorted(shuffled[:n_train]), "dev": sorted(shuffled[n_train:n_train + n_dev]),
              "test": sorted(shuffled[n_train + n_dev:])}
    lookup = {s: split for split, members in groups.items() for s in members}
    return np.array([lookup[s] for s in speakers]), {"speakers": groups}


def load_manifest(manifest, audio_root=None, *, split_column: str = "split", label_map=None,
                  seed: int = 42, corpus: str | None = None) -> Dataset:
    """Read a CSV manifest (`path`, `emotion`, a split column or a `speaker` column; optional `corpus`).

    `path` is relative to `audio_root` (default: the manifest's folder). When the split column is
    absent, a speaker-independent split is made from `speaker` with `seed` and recorded in
    `split_info`. `label_map` renames labels ({"calm": "neutral"}); a target of "-" drops them.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise TrainingError(f"manifest {manifest} not found")
    root = Path(audio_root) if audio_root is not None else manifest.parent
    mapping = parse_label_map(label_map)
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise TrainingError(f"manifest {manifest} has no rows")
    columns = set(rows[0])
    for needed in ("path", "emotion"):
        if needed not in columns:
            raise TrainingError(f"manifest {manifest} has no {needed!r} column (columns: {', '.join(sorted(columns))})")
    keep = []
    for number, row in enumerate(rows, start=2):
        label = (row["emotion"] or "").strip().lower()
        if not label:
            raise TrainingError(f"{manifest}:{number}: empty emotion")
        label = mapping.get(label, label)
        if label != DROP:
            keep.append((row, label))
    if not keep:
        raise TrainingError(f"manifest {manifest}: every utterance was dropped by the label map")
    paths = [root / row["path"] for row, _ in keep]
    labels = np.array([label for _, label in keep])
    speakers = np.array([(row.get("speaker") or "").strip() for row, _ in keep])
    corpus_name = corpus or manifest.parent.name or manifest.stem
    if "corpus" in columns and corpus is None:  # a manifest of several corpora names each row's corpus
        corpora = np.array([(row.get("corpus") or "").strip() or corpus_name for row, _ in keep])
    else:
        corpora = np.array([corpus_name] * len(paths))
    info: dict = {"manifest": str(manifest), "label_map": mapping}
    if split_column in columns:
        splits = []
        for row, _ in keep:
            value = (row[split_column] or "").strip().lower()
            if value not in SPLIT_ALIASES:
                raise TrainingError(f"manifest {manifest}: split value {row[split_column]!r} in column "
                                    f"{split_column!r} is not one of train/dev/test")
            splits.append(SPLIT_ALIASES[value])
        splits = np.array(splits)
        info["source"] = f"column:{split_column}"
    else:
        if "speaker" not in columns:
            raise TrainingError(f"manifest {manifest} has neither a {split_column!r} column nor a 'speaker' column "
                                "to make a speaker-independent split from")
        splits, details = speaker_independent_split(speakers, seed)
        info.update(details, source=f"speaker-independent (seed {seed})")
    missing = [split for split in ("train", "dev") if not np.any(splits == split)]
    if missing:
        raise TrainingError(f"manifest {manifest}: no utterances in the {' and '.join(missing)} split")
    return Dataset(paths, labels, speakers, splits, corpora, {corpus_name: info})


def concat_datasets(datasets: Sequence[Dataset]) -> Dataset:
    if len(datasets) == 1:
        return datasets[0]
    info: dict = {}
    for dataset in datasets:
        info.update(dataset.split_info)
    return Dataset([p for d in datasets for p in d.paths], np.concatenate([d.labels for d in datasets]),
                   np.concatenate([d.speakers for d in datasets]), np.concatenate([d.splits for d in datasets]),
                   np.concatenate([d.corpora for d in datasets]), info)


# --------------------------------------------------------------------------------------------
# Features (cached on disk by audio sha256 + extractor signature)
# --------------------------------------------------------------------------------------------

class EgemapsExtractor:
    """openSMILE eGeMAPSv02 functionals (88), the lite profile's SER input."""

    def __init__(self) -> None:
        from models.egemaps import FEATURE_SET, Egemaps

        self._egemaps = Egemaps()
        self.feature_set = FEATURE_SET
        self.signature = f"{FEATURE_SET}|{Egemaps.version()}"

    def __call__(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        return [self._egemaps.functionals(w) for w in waves]


class Emotion2vecExtractor:
    """emotion2vec_plus_large utterance features (1024, the paper profile's `ser_input`).

    Only the emotion2vec model is needed (the other paper models may be absent); the cache key is
    the checkpoint's sha256 and the inference precision.
    """

    feature_set = "emotion2vec_plus_large"

    def __init__(self, model_dir) -> None:
        try:
            from models.paper import PaperProfile
        except ImportError as error:
            raise TrainingError(f"emotion2vec features need the paper profile (models.paper): {error}") from None
        try:
            self._profile = PaperProfile.from_model_dir(model_dir, allow_missing=True)
        except (FileNotFoundError, ValueError) as error:
            raise TrainingError(str(error)) from None
        encoder = getattr(self._profile, "emotion2vec", None)
        info = encoder.info() if encoder is not None and hasattr(encoder, "info") else {}
        if info.get("sha256"):
            self.signature = f"{self.feature_set}|e2v:{info['sha256']}|mode:{info.get('precision')}"
        else:
            self.signature = f"{self.feature_set}|" + "|".join(str(p) for p in self._profile.signature_parts())

    def __call__(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        encoder = getattr(self._profile, "emotion2vec", None)
        if encoder is not None and hasattr(encoder, "features"):  # only emotion2vec, not every paper model
            _, utterance = encoder.features(waves)
            return [np.asarray(row, np.float32) for row in utterance]
        return [np.asarray(f["ser_input"], np.float32) for f in self._profile.utterance_features(waves)]


def speed_perturb(wave: np.ndarray, factor: float) -> np.ndarray:
    """Kaldi-style speed perturbation: the utterance played `factor` times faster (tempo, pitch and formants
    change together), by resampling 16 kHz audio and reading it back at 16 kHz."""
    import soxr

    return soxr.resample(wave, 16000, int(round(16000 / factor))).astype(np.float32)


class SpeedPerturbed:
    """An extractor that speed-perturbs the waves first: extra training copies (never dev or test)."""

    def __init__(self, base, factor: float) -> None:
        self.base, self.factor = base, float(factor)
        self.feature_set = base.feature_set
        self.signature = f"{base.signature}|aug=speed:{self.factor:g}"  # its own feature cache

    def __call__(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        return self.base([speed_perturb(w, self.factor) for w in waves])


def make_extractor(features: str, model_dir=None):
    if features == "egemaps":
        return EgemapsExtractor()
    if features == "emotion2vec":
        model_dir = model_dir or os.environ.get("EMOPRES_MODEL_DIR")
        if not model_dir:
            raise TrainingError("--features emotion2vec needs the emotion2vec_plus_large model: set EMOPRES_MODEL_DIR "
                                "or pass --model-dir (see `emopres models check`)")
        if not Path(model_dir).is_dir():
            raise TrainingError(f"model directory {model_dir} does not exist")
        return Emotion2vecExtractor(model_dir)
    raise TrainingError(f"unknown feature set {features!r} (choose egemaps or emotion2vec)")


def default_cache_dir() -> Path:
    return Path(os.environ.get("EMOPRES_CACHE_DIR") or Path.home() / ".cache" / "emopres") / "features"


def extract_features(paths: Sequence[Path], extractor, cache_dir=None, *, batch_size: int = 8,
                     progress: Callable[[str], None] | None = None) -> tuple[np.ndarray, list[str]]:
    """(N, D) features of audio files and their sha256s; each file is extracted once per extractor signature."""
    from worker.audio import AudioError, load_audio_file

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = cache / hashlib.sha256(extractor.signature.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "SIGNATURE").write_text(extractor.signature + "\n")
    hashes, results, todo = [], [None] * len(paths), []
    for i, path in enumerate(paths):
        try:
            sha = file_sha256(path)
        except OSError as error:
            raise TrainingError(f"cannot read {path}: {error.strerror}") from None
        hashes.append(sha)
        cached = folder / f"{sha}.npy"
        if cached.is_file():
            results[i] = np.load(cached)
        else:
            todo.append(i)
    started, done = time.monotonic(), 0
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        waves = []
        for i in chunk:
            try:
                waves.append(load_audio_file(paths[i])[0])
            except AudioError as error:
                raise TrainingError(f"{paths[i]}: {error}") from None
        for i, vector in zip(chunk, extractor(waves)):
            vector = np.asarray(vector, np.float32)
            tmp = folder / f"{hashes[i]}.{os.getpid()}.tmp.npy"
            np.save(tmp, vector)
            os.replace(tmp, folder / f"{hashes[i]}.npy")
            results[i] = vector
        done += len(chunk)
        if progress:
            rate = done / max(time.monotonic() - started, 1e-9)
            progress(f"features {extractor.feature_set}: {done}/{len(todo)} extracted "
                     f"({len(paths) - len(todo)} cached), {rate:.1f} files/s")
    features = np.stack(results).astype(np.float32)
    if not np.all(np.isfinite(features)):
        bad = [str(paths[i]) for i in np.flatnonzero(~np.isfinite(features).all(axis=1))[:3]]
        raise TrainingError(f"non-finite features for {', '.join(bad)}")
    return features, hashes


def training_data_hash(hashes: Sequence[str], labels: Sequence[str], splits: Sequence[str], feature_signature: str) -> str:
    """sha256 over (audio sha256, label, split) sorted, plus the feature extractor: what the head was fitted on."""
    digest = hashlib.sha256(feature_signature.encode())
    for row in sorted(zip(hashes, labels, splits)):
        digest.update("\t".join(row).encode() + b"\n")
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Balancing, training, evaluation
# --------------------------------------------------------------------------------------------

def balance_training_set(features: np.ndarray, targets: np.ndarray, method: str, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
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
    architecture: str = "paper"  # or "nkululeko" (models.ser_head.ARCHITECTURES)


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """UA (mean recall over classes present in y_true), WA (accuracy), K x K confusion (rows = gold)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    support = confusion.sum(axis=1)
    present = support > 0
    recall = np.divide(np.diag(confusion), support, out=np.zeros(n_classes), where=present)
    return {"ua": float(recall[present].mean()) if present.any() else None,
            "wa": float((y_true == y_pred).mean()) if len(y_true) else None,
            "n": int(len(y_true)), "confusion": confusion.tolist()}


def predict_classes(network, standardised: np.ndarray) -> np.ndarray:
    import torch

    network.eval()
    with torch.no_grad():
        return network(torch.from_numpy(np.ascontiguousarray(standardised, np.float32))).argmax(dim=1).numpy()


def _adam(network, config: TrainConfig):
    import torch

    try:  # the fused CPU kernel is about twice as fast for batch size 2 (deterministic, same update rule)
        return torch.optim.Adam(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                                fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)


@dataclass
class FitResult:
    network: object
    kept_epoch: int
    history: list[dict]
    optimiser_class_counts: list[int]   # labels the optimiser saw per epoch (counted from the batches)
    seconds: float


def fit_network(train_x: np.ndarray, train_y: np.ndarray, dev_x: np.ndarray, dev_y: np.ndarray, n_classes: int,
                config: TrainConfig, progress: Callable[[dict], None] | None = None) -> FitResult:
    """Train the feed-forward net on standardised features; keep the epoch with the best dev UA (first on ties)."""
    import torch
    from torch import nn

    from models.ser_head import build_network

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64x32 MLP with batch size 2 runs fastest on one thread
    try:
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        network = build_network(train_x.shape[1], n_classes, tuple(config.hidden), config.dropout,
                                config.architecture)
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
                index = order[start:start + config.batch_size]
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
            row = {"epoch": epoch, "train_loss": total / len(ys), "dev_ua": dev["ua"], "dev_wa": dev["wa"],
                   "best_epoch": kept}
            history.append(row)
            if progress:
                progress(dict(row, max_epochs=config.max_epochs, improved=improved))
        network.load_state_dict(best_state)
        network.eval()
        return FitResult(network, kept, history, seen.tolist(), time.monotonic() - started)
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# The recipe end to end
# --------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    balance: str
    head: object                 # SerHead
    fit: FitResult               # the first (or only) network's training
    metrics: dict                # split -> classification_scores (train = the unbalanced training split)
    train_class_counts: list[int]
    balanced_class_counts: list[int]
    member_fits: list[FitResult] = field(default_factory=list)  # every network of an ensemble, fit first


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def epoch_printer(label: str, write: Callable[[str], None] = _stderr) -> Callable[[dict], None]:
    def report(row: dict) -> None:
        write(f"[{label}] epoch {row['epoch']:>3}/{row['max_epochs']}  loss {row['train_loss']:.4f}  "
              f"dev UA {row['dev_ua']:.4f}  WA {row['dev_wa']:.4f}  best epoch {row['best_epoch']}"
              + ("  *" if row["improved"] else ""))
    return report


def standardise_sides(features: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """per_side normalisation: z-score every side (group of utterances evaluated together) with its own statistics."""
    from models.ser_head import side_standardise

    out = np.empty_like(features, dtype=np.float32)
    for side in np.unique(sides):
        mask = sides == side
        if mask.sum() < 2:
            raise TrainingError(f"per_side normalisation: side {side!r} has fewer than 2 utterances")
        out[mask] = side_standardise(features[mask])
    return out


def train_one(features: np.ndarray, targets: np.ndarray, splits: np.ndarray, classes: Sequence[str], *,
              feature_set: str, balance: str, config: TrainConfig, metadata: dict | None = None,
              progress: Callable[[dict], None] | None = None, normalization: str = "per_utterance",
              sides: np.ndarray | None = None, augmented: np.ndarray | None = None) -> RunResult:
    """Scale on the training split, balance it, train, keep the dev-best epoch; return the head and its scores.

    normalization="per_side" first z-scores each group of `sides` (default: one per split) with its own
    statistics, as the pipeline must do at inference with each side of a job. `augmented` marks extra
    training rows (e.g. speed-perturbed copies): used for the scaler, balancing and fitting, never scored.
    """
    from models.ser_head import MeanOfMembers, SerHead

    if normalization == "per_side":
        features = standardise_sides(features, splits if sides is None else np.asarray(sides))
    elif normalization != "per_utterance":
        raise TrainingError(f"unknown normalization {normalization!r} (choose per_utterance or per_side)")
    metadata = dict(metadata or {}, normalization=normalization)
    train, dev = splits == "train", splits == "dev"
    mean = features[train].mean(axis=0)
    scale = features[train].std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0).astype(np.float32)
    head = SerHead.new(features.shape[1], list(classes), feature_set, config.hidden, config.dropout,
                       mean.astype(np.float32), scale, metadata, architecture=config.architecture)
    standardised = head.standardise(features)
    train_x, train_y = standardised[train], targets[train]
    balanced_x, balanced_y = balance_training_set(train_x, train_y, balance, config.seed)
    fits = [fit_network(balanced_x, balanced_y, standardised[dev], targets[dev], len(classes),
                        replace(config, seed=config.seed + member), progress)
            for member in range(max(1, config.ensemble))]
    head.network = fits[0].network if len(fits) == 1 else MeanOfMembers([f.network for f in fits])
    metrics = {}
    original = np.ones(len(splits), bool) if augmented is None else ~np.asarray(augmented, bool)
    for split in SPLITS:
        mask = (splits == split) & original
        if mask.any():
            metrics[split] = classification_scores(targets[mask], predict_classes(head.network, standardised[mask]),
                                                   len(classes))
    return RunResult(balance, head, fits[0], metrics, np.bincount(train_y, minlength=len(classes)).tolist(),
                     np.bincount(balanced_y, minlength=len(classes)).tolist(), fits)


def table2(runs: dict[str, RunResult] | dict[str, dict]) -> str:
    """The paper's Table 2 layout: UA and WA per split, one row per balancing setting."""
    lines = ["| balancing | train UA | train WA | dev UA | dev WA | test UA | test WA |",
             "|---|---|---|---|---|---|---|"]
    for name, run in runs.items():
        metrics = run.metrics if isinstance(run, RunResult) else run["metrics"]
        cells = []
        for split in SPLITS:
            scores = metrics.get(split)
            cells += ["-", "-"] if not scores else [f"{scores['ua']:.3f}", f"{scores['wa']:.3f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion, np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = 1.0 + 0.75 * len(classes)
    figure, axis = plt.subplots(figsize=(size + 1.2, size))
    image = axis.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if matrix[i, j]:
                axis.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=8,
                          color="white" if share[i, j] > 0.6 else "black")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("gold")
    axis.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of gold row")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def run_report(run: RunResult, classes: Sequence[str]) -> dict:
    report = {"balance": run.balance, "kept_epoch": run.fit.kept_epoch,
              "dev_ua_at_kept_epoch": run.fit.history[run.fit.kept_epoch - 1]["dev_ua"],
              "train_class_counts": dict(zip(classes, run.train_class_counts)),
              "optimiser_class_counts": dict(zip(classes, run.fit.optimiser_class_counts)),
              "metrics": run.metrics, "history": run.fit.history, "seconds": round(run.fit.seconds, 2)}
    if len(run.member_fits) > 1:  # the fields above describe the first network; metrics are the ensemble's
        report["members"] = [{"kept_epoch": f.kept_epoch, "dev_ua_at_kept_epoch": f.history[f.kept_epoch - 1]["dev_ua"],
                              "seconds": round(f.seconds, 2)} for f in run.member_fits]
        report["seconds"] = round(sum(f.seconds for f in run.member_fits), 2)
    return report


def train_ser(dataset: Dataset, out_dir, *, features: str = "egemaps", balance: str = "clustercentroids",
              config: TrainConfig | None = None, classes: Sequence[str] | None = None, model_dir=None,
              cache_dir=None, extractor=None, log: Callable[[str], None] | None = _stderr,
              extra_metadata: dict | None = None, normalization: str = "per_utterance") -> dict:
    """The whole recipe: features, scaler, balancing ("clustercentroids", "none" or "both"), training,
    dev-best epoch, Table 2, confusion matrices (JSON + PNG); writes the head to `out_dir`.

    normalization="per_side" (an explicit option, not the paper's recipe) z-scores each corpus's split
    with its own statistics before training; such a head predicts only through predict_proba_side.

    With balance="both" both settings are trained and reported; the head kept in `out_dir` is the one
    with the higher dev UA (ties: clustercentroids, the paper's setting). Returns the report.
    """
    config = config or TrainConfig()
    if balance not in (*BALANCE_CHOICES, "both"):
        raise TrainingError(f"unknown balancing {balance!r} (choose clustercentroids, none or both)")
    present = sorted(set(dataset.labels.tolist()))
    classes = list(classes) if classes is not None else present
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise TrainingError(f"labels {', '.join(unknown)} are not in the class list {', '.join(classes)}")
    train_labels = set(dataset.labels[dataset.splits == "train"].tolist())
    if len(train_labels) < 2:
        raise TrainingError("the training split needs at least two emotions")
    missing = [c for c in classes if c not in train_labels]
    if missing:
        raise TrainingError(f"classes {', '.join(missing)} have no training utterances")
    extractor = extractor or make_extractor(features, model_dir)
    say = log or (lambda message: None)
    matrix, hashes = extract_features(dataset.paths, extractor, cache_dir, progress=say)
    targets = np.array([classes.index(label) for label in dataset.labels], np.int64)
    sides = np.char.add(np.char.add(dataset.corpora.astype(str), ":"), dataset.splits.astype(str))
    signature = extractor.signature + "".join(f"|aug=speed:{f:g}" for f in config.speed_perturb)
    data_hash = training_data_hash(hashes, dataset.labels.tolist(), dataset.splits.tolist(), signature)
    train_rows = np.flatnonzero(dataset.splits == "train")
    blocks = [(matrix, targets, dataset.splits, sides)]
    for factor in config.speed_perturb:
        perturbed, _ = extract_features([dataset.paths[i] for i in train_rows], SpeedPerturbed(extractor, factor),
                                        cache_dir, progress=say)
        blocks.append((perturbed, targets[train_rows], dataset.splits[train_rows], sides[train_rows]))
    augmented = np.concatenate([np.full(len(b[1]), k > 0) for k, b in enumerate(blocks)])
    all_x, all_y, all_splits, all_sides = (np.concatenate([b[i] for b in blocks]) for i in range(4))
    settings = list(BALANCE_CHOICES) if balance == "both" else [balance]
    runs: dict[str, RunResult] = {}
    for setting in settings:
        say(f"training: balance={setting}, {int((dataset.splits == 'train').sum())} train "
            f"(+{int(augmented.sum())} speed-perturbed copies) / {int((dataset.splits == 'dev').sum())} dev "
            f"utterances, {len(classes)} classes")
        runs[setting] = train_one(all_x, all_y, all_splits, classes, feature_set=extractor.feature_set,
                                  balance=setting, config=config, normalization=normalization, sides=all_sides,
                                  augmented=augmented, progress=epoch_printer(setting, say) if log else None)
    chosen = max(settings, key=lambda s: (runs[s].metrics["dev"]["ua"], s == "clustercentroids"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "feature_set": extractor.feature_set, "feature_signature": extractor.signature, "classes": classes,
        "training_data_sha256": data_hash, "n_utterances": len(dataset), "split": dataset.split_info,
        "split_counts": dataset.counts(),
        "corpora": {str(c): int(n) for c, n in zip(*np.unique(dataset.corpora, return_counts=True))},
        "recipe": recipe_metadata(config), "normalization": normalization, "selected_balance": chosen,
        "selection_rule": "higher dev UA (never test); ties -> clustercentroids" if balance == "both" else "as requested",
        "runs": {name: run_report(run, classes) for name, run in runs.items()},
        "table2": table2(runs),
    }
    pngs = []
    for name, run in runs.items():
        for split, scores in run.metrics.items():
            path = plot_confusion(scores["confusion"], classes,
                                  f"{extractor.feature_set}, balance={name}, {split}: UA {scores['ua']:.3f} "
                                  f"WA {scores['wa']:.3f}", out / f"confusion_{name}_{split}.png")
            pngs.append(path.name)
    report["confusion_png"] = pngs
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    (out / "report.md").write_text(markdown_report(report))
    head = runs[chosen].head
    head.metadata = {**head_metadata(report, runs[chosen], config), **(extra_metadata or {})}
    head.save(out)
    report["head_sha256"] = head.sha256()
    say(f"kept balance={chosen}, epoch {runs[chosen].fit.kept_epoch}; head written to {out}")
    return report


def recipe_metadata(config: TrainConfig) -> dict:
    return {"network": "feed-forward", "architecture": config.architecture, "hidden": list(config.hidden),
            "activation": "relu",
            "dropout": config.dropout, "batch_size": config.batch_size, "max_epochs": config.max_epochs,
            "optimiser": "adam", "learning_rate": config.learning_rate, "weight_decay": config.weight_decay,
            "loss": "cross-entropy", "epoch_selection": "best dev UA (first on ties)",
            "balancing_scope": "training split only", "scaler": "standard, fitted on the unbalanced training split",
            "seed": config.seed, "architecture_note": NKULULEKO_NOTE,
            **({"augmentation": f"speed perturbation {', '.join(f'{f:g}' for f in config.speed_perturb)}: "
                                "extra copies of the training split (not the paper's recipe)"}
               if config.speed_perturb else {}),
            **({"ensemble": f"{config.ensemble} networks (seeds {config.seed}-{config.seed + config.ensemble - 1}), "
                            "each with its own dev-best epoch; probabilities averaged (not the paper's recipe)"}
               if config.ensemble > 1 else {})}


def head_metadata(report: dict, run: RunResult, config: TrainConfig) -> dict:
    return {"normalization": report["normalization"], "recipe": recipe_metadata(config), "balance": run.balance,
            "kept_epoch": run.fit.kept_epoch if len(run.member_fits) <= 1 else [f.kept_epoch for f in run.member_fits],
            "training_data_sha256": report["training_data_sha256"],
            "feature_signature": report["feature_signature"], "split": report["split"],
            "scores": {split: {"ua": s["ua"], "wa": s["wa"], "n": s["n"]} for split, s in run.metrics.items()},
            "training_report": "report.json"}


def markdown_report(report: dict) -> str:
    lines = [f"# SER head training report ({report['feature_set']})", "",
             f"Classes: {', '.join(report['classes'])}. Utterances: {report['n_utterances']} "
             f"({', '.join(f'{k}: {v}' for k, v in report['corpora'].items())}).",
             f"Training data sha256: `{report['training_data_sha256']}`.", "",
             "## Table 2 (UA = unweighted accuracy = mean per-class recall; WA = accuracy)", "",
             report["table2"], "",
             f"Kept: balance={report['selected_balance']} ({report['selection_rule']}).", ""]
    for name, run in report["runs"].items():
        lines += [f"## balance={name}", "",
                  f"Kept epoch {run['kept_epoch']} of {len(run['history'])} (dev UA {run['dev_ua_at_kept_epoch']:.4f})"
                  + ("." if "members" not in run else
                     f" for the first of {len(run['members'])} networks; kept epochs "
                     f"{[m['kept_epoch'] for m in run['members']]}, the head averages their probabilities."),
                  f"Training split class counts: {run['train_class_counts']}.",
                  f"Class counts seen by the optimiser per epoch: {run['optimiser_class_counts']}.", ""]
        for split, scores in run["metrics"].items():
            lines += [f"Confusion, {split} (rows gold, columns predicted; {', '.join(report['classes'])}):", "", "```"]
            lines += [" ".join(f"{v:>4}" for v in row) for row in scores["confusion"]]
            lines += ["```", ""]
    lines += ["## Recipe", "", "```json", json.dumps(report["recipe"], indent=2), "```", ""]
    return "\n".join(lines)
