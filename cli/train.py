"""`emopres train-ser`: train a SER head with the paper's recipe (see models/ser/training.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-ser",
        help="train a SER head (paper recipe) from a labelled manifest",
        description="Train the paper's SER head (MLP 64-32 or nkululeko's 32-64, dropout 0.3, batch 2, <= 80 epochs, "
        "epoch kept by dev UA, "
        "ClusterCentroids on the training split) and write a head directory that `emopres evaluate --head` "
        "and the workers load. Per-epoch progress goes to stderr; Table 2 to stdout.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "manifest",
        nargs="+",
        type=Path,
        help="CSV with path, emotion and a split column (train/dev/test) or a speaker column; "
        "several manifests are concatenated (corpus = each manifest's folder name)",
    )
    parser.add_argument(
        "--audio-root",
        type=Path,
        default=None,
        help="folder the manifest paths are relative to (default: each manifest's folder)",
    )
    parser.add_argument(
        "--features",
        choices=("egemaps", "emotion2vec"),
        required=True,
        help="egemaps: openSMILE eGeMAPSv02 functionals (lite profile); "
        "emotion2vec: emotion2vec_plus_large utterance features (paper profile)",
    )
    parser.add_argument("--out", type=Path, required=True, help="head directory to write")
    parser.add_argument(
        "--balance",
        choices=("clustercentroids", "none", "both"),
        default="clustercentroids",
        help="class balancing of the training split; 'both' trains and reports both and keeps the "
        "one with the higher dev UA",
    )
    parser.add_argument(
        "--split-column",
        default="split",
        help="manifest column with train/dev/test; if absent, a speaker-independent split is made "
        "from the speaker column and recorded",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the split, the balancing and the training")
    parser.add_argument(
        "--label-map",
        nargs="*",
        default=[],
        metavar="FROM=TO",
        help="rename labels, e.g. calm=neutral; TO='-' leaves those utterances out",
    )
    parser.add_argument(
        "--classes",
        default=None,
        help="comma-separated class list in head order, or 'meld' for MELD's 7 (default: the labels found, sorted)",
    )
    parser.add_argument(
        "--normalization",
        choices=("per_utterance", "per_side"),
        default="per_utterance",
        help="per_utterance: every utterance on its own (works anywhere); per_side: z-score each "
        "corpus split with its own statistics, and at inference each side of a job with its "
        "own (better across corpora, but the head then needs a whole side at once)",
    )
    parser.add_argument(
        "--ensemble",
        type=int,
        default=1,
        metavar="N",
        help="train N networks of the recipe (seeds SEED..SEED+N-1, each with its own dev-best "
        "epoch) and average their probabilities (default 1: the paper's single network)",
    )
    parser.add_argument(
        "--speed-perturb",
        default="",
        metavar="FACTORS",
        help="comma-separated speed factors, e.g. 0.9,1.1: speed-perturbed copies of the training "
        "split are added to it (Kaldi-style; dev and test untouched; not the paper's recipe)",
    )
    parser.add_argument(
        "--architecture",
        choices=("paper", "nkululeko"),
        default="paper",
        help="paper: the layers the paper states, in->64->32->K with ReLU and dropout after each; "
        "nkululeko: what nkululeko builds from the same configuration, Linear(in,32) -> ReLU -> "
        "Linear(32,64) -> Dropout(0.3) -> Linear(64,K) (for reproducing the paper's numbers)",
    )
    parser.add_argument("--max-epochs", type=int, default=80)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument(
        "--model-dir", default=None, help="models directory for --features emotion2vec (default: $EMOPRES_MODEL_DIR)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="feature cache (default: $EMOPRES_CACHE_DIR or ~/.cache/emopres/features)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from emopres_client.cli import CommandError
    from models.ser.head import HeadError
    from models.ser.training import MELD_CLASSES, TrainConfig, TrainingError, concat_datasets, load_manifest, train_ser

    if args.max_epochs < 1:
        raise CommandError("--max-epochs must be at least 1")
    if args.ensemble < 1:
        raise CommandError("--ensemble must be at least 1")
    try:
        speed = tuple(float(v) for v in args.speed_perturb.split(",") if v.strip())
    except ValueError:
        raise CommandError(f"--speed-perturb takes comma-separated numbers, got {args.speed_perturb!r}") from None
    if any(not 0.5 <= f <= 2.0 or f == 1.0 for f in speed):
        raise CommandError("--speed-perturb factors must lie in 0.5-2.0 and differ from 1")
    if args.audio_root is not None and not args.audio_root.is_dir():
        raise CommandError(f"--audio-root {args.audio_root} is not a folder")
    classes = None
    if args.classes:
        classes = (
            list(MELD_CLASSES)
            if args.classes.strip().lower() == "meld"
            else [c.strip().lower() for c in args.classes.split(",") if c.strip()]
        )
        if len(set(classes)) != len(classes) or len(classes) < 2:
            raise CommandError("--classes needs at least two distinct names")
    try:
        datasets = [
            load_manifest(m, args.audio_root, split_column=args.split_column, label_map=args.label_map, seed=args.seed)
            for m in args.manifest
        ]
        dataset = concat_datasets(datasets)
        log = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
        report = train_ser(
            dataset,
            args.out,
            features=args.features,
            balance=args.balance,
            config=TrainConfig(
                max_epochs=args.max_epochs,
                learning_rate=args.learning_rate,
                seed=args.seed,
                ensemble=args.ensemble,
                speed_perturb=speed,
                architecture=args.architecture,
            ),
            classes=classes,
            model_dir=args.model_dir,
            cache_dir=args.cache_dir,
            log=log,
            normalization=args.normalization,
        )
    except (TrainingError, HeadError) as error:
        raise CommandError(str(error)) from None
    print(report["table2"])
    print(
        f"\nhead: {args.out} (balance={report['selected_balance']}, sha256 {report['head_sha256'][:12]}); "
        f"report: {args.out / 'report.md'}"
    )
    return 0
