"""SER training data: labelled manifests (path, emotion, split or speaker), label maps, speaker-independent
splits, several corpora concatenated."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "dev", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "dev": "dev",
    "valid": "dev",
    "validation": "dev",
    "val": "dev",
    "devel": "dev",
    "development": "dev",
    "test": "test",
    "eval": "test",
}
MELD_CLASSES = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
DROP = "-"  # label-map target meaning "leave these utterances out"


class TrainingError(ValueError):
    """Bad training input (manifest, labels, splits, features); the message is for the user."""


@dataclass
class Dataset:
    """Utterances of one or more manifests with labels, speakers, splits and a corpus name each."""

    paths: list[Path]
    labels: np.ndarray  # str labels after the label map
    speakers: np.ndarray  # str ("" when the manifest has no speaker column)
    splits: np.ndarray  # "train" / "dev" / "test"
    corpora: np.ndarray  # str: which manifest (corpus) each utterance came from
    split_info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            labels, counts = np.unique(self.labels[self.splits == split], return_counts=True)
            out[split] = {str(k): int(v) for k, v in zip(labels, counts, strict=True)}
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


def speaker_independent_split(
    speakers: Sequence[str], seed: int = 42, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> tuple[np.ndarray, dict]:
    """Assign whole speakers to train/dev/test (shuffled with `seed`), about `fractions` of speakers each.

    Needs at least three speakers; returns the split of every utterance and the speaker lists.
    """
    speakers = np.asarray([str(s) for s in speakers])
    unique = sorted(set(speakers.tolist()))
    if len(unique) < 3:
        raise TrainingError(
            f"a speaker-independent split needs at least 3 speakers, the manifest has {len(unique)}; "
            "add a split column (train/dev/test)"
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    shuffled = [unique[i] for i in order]
    n_dev = max(1, int(round(fractions[1] * len(unique))))
    n_test = max(1, int(round(fractions[2] * len(unique))))
    n_train = len(unique) - n_dev - n_test
    if n_train < 1:
        n_train, n_dev, n_test = 1, 1, len(unique) - 2
    groups = {
        "train": sorted(shuffled[:n_train]),
        "dev": sorted(shuffled[n_train : n_train + n_dev]),
        "test": sorted(shuffled[n_train + n_dev :]),
    }
    lookup = {s: split for split, members in groups.items() for s in members}
    return np.array([lookup[s] for s in speakers]), {"speakers": groups}


def load_manifest(
    manifest, audio_root=None, *, split_column: str = "split", label_map=None, seed: int = 42, corpus: str | None = None
) -> Dataset:
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
                raise TrainingError(
                    f"manifest {manifest}: split value {row[split_column]!r} in column "
                    f"{split_column!r} is not one of train/dev/test"
                )
            splits.append(SPLIT_ALIASES[value])
        splits = np.array(splits)
        info["source"] = f"column:{split_column}"
    else:
        if "speaker" not in columns:
            raise TrainingError(
                f"manifest {manifest} has neither a {split_column!r} column nor a 'speaker' column "
                "to make a speaker-independent split from"
            )
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
    return Dataset(
        [p for d in datasets for p in d.paths],
        np.concatenate([d.labels for d in datasets]),
        np.concatenate([d.speakers for d in datasets]),
        np.concatenate([d.splits for d in datasets]),
        np.concatenate([d.corpora for d in datasets]),
        info,
    )
