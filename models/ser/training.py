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

The recipe is split by job: models/ser/data.py (manifests, splits), models/ser/features.py (extractors,
cached features), models/ser/fit.py (balancing, the training loop, scores), models/ser/report.py
(Table 2, confusion matrices, reports). This module runs it end to end (`train_ser`) and is the
import point of its public names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from models.ser.data import (
    DROP,
    MELD_CLASSES,
    SPLIT_ALIASES,
    SPLITS,
    Dataset,
    TrainingError,
    concat_datasets,
    load_manifest,
    parse_label_map,
    speaker_independent_split,
)
from models.ser.features import (
    EgemapsExtractor,
    Emotion2vecExtractor,
    SpeedPerturbed,
    default_cache_dir,
    extract_features,
    make_extractor,
    speed_perturb,
    training_data_hash,
)
from models.ser.fit import (
    BALANCE_CHOICES,
    FitResult,
    RunResult,
    TrainConfig,
    balance_training_set,
    classification_scores,
    fit_network,
    predict_classes,
    standardise_sides,
    train_one,
)
from models.ser.report import (
    NKULULEKO_NOTE,
    _stderr,
    epoch_printer,
    head_metadata,
    markdown_report,
    plot_confusion,
    recipe_metadata,
    run_report,
    table2,
)

__all__ = [
    "BALANCE_CHOICES",
    "DROP",
    "MELD_CLASSES",
    "NKULULEKO_NOTE",
    "SPLITS",
    "SPLIT_ALIASES",
    "Dataset",
    "EgemapsExtractor",
    "Emotion2vecExtractor",
    "FitResult",
    "RunResult",
    "SpeedPerturbed",
    "TrainConfig",
    "TrainingError",
    "balance_training_set",
    "classification_scores",
    "concat_datasets",
    "default_cache_dir",
    "epoch_printer",
    "extract_features",
    "fit_network",
    "head_metadata",
    "load_manifest",
    "make_extractor",
    "markdown_report",
    "parse_label_map",
    "plot_confusion",
    "predict_classes",
    "recipe_metadata",
    "run_report",
    "speaker_independent_split",
    "speed_perturb",
    "standardise_sides",
    "table2",
    "train_one",
    "train_ser",
    "training_data_hash",
]


def train_ser(
    dataset: Dataset,
    out_dir,
    *,
    features: str = "egemaps",
    balance: str = "clustercentroids",
    config: TrainConfig | None = None,
    classes: Sequence[str] | None = None,
    model_dir=None,
    cache_dir=None,
    extractor=None,
    log: Callable[[str], None] | None = _stderr,
    extra_metadata: dict | None = None,
    normalization: str = "per_utterance",
) -> dict:
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
        perturbed, _ = extract_features(
            [dataset.paths[i] for i in train_rows], SpeedPerturbed(extractor, factor), cache_dir, progress=say
        )
        blocks.append((perturbed, targets[train_rows], dataset.splits[train_rows], sides[train_rows]))
    augmented = np.concatenate([np.full(len(b[1]), k > 0) for k, b in enumerate(blocks)])
    all_x, all_y, all_splits, all_sides = (np.concatenate([b[i] for b in blocks]) for i in range(4))
    settings = list(BALANCE_CHOICES) if balance == "both" else [balance]
    runs: dict[str, RunResult] = {}
    for setting in settings:
        say(
            f"training: balance={setting}, {int((dataset.splits == 'train').sum())} train "
            f"(+{int(augmented.sum())} speed-perturbed copies) / {int((dataset.splits == 'dev').sum())} dev "
            f"utterances, {len(classes)} classes"
        )
        runs[setting] = train_one(
            all_x,
            all_y,
            all_splits,
            classes,
            feature_set=extractor.feature_set,
            balance=setting,
            config=config,
            normalization=normalization,
            sides=all_sides,
            augmented=augmented,
            progress=epoch_printer(setting, say) if log else None,
        )
    chosen = max(settings, key=lambda s: (runs[s].metrics["dev"]["ua"], s == "clustercentroids"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "feature_set": extractor.feature_set,
        "feature_signature": extractor.signature,
        "classes": classes,
        "training_data_sha256": data_hash,
        "n_utterances": len(dataset),
        "split": dataset.split_info,
        "split_counts": dataset.counts(),
        "corpora": {str(c): int(n) for c, n in zip(*np.unique(dataset.corpora, return_counts=True), strict=True)},
        "recipe": recipe_metadata(config),
        "normalization": normalization,
        "selected_balance": chosen,
        "selection_rule": "higher dev UA (never test); ties -> clustercentroids"
        if balance == "both"
        else "as requested",
        "runs": {name: run_report(run, classes) for name, run in runs.items()},
        "table2": table2(runs),
    }
    pngs = []
    for name, run in runs.items():
        for split, scores in run.metrics.items():
            path = plot_confusion(
                scores["confusion"],
                classes,
                f"{extractor.feature_set}, balance={name}, {split}: UA {scores['ua']:.3f} WA {scores['wa']:.3f}",
                out / f"confusion_{name}_{split}.png",
            )
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
