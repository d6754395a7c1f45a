"""`emopres datasets meld-st` (MELD-ST -> pairs file + SER manifests) and `emopres reproduce meld-st` (the paper)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cli.engine_options import add_engine_arguments, cache_dir_from_args
from emopres_client.cli import CommandError
from worker.research.datasets.meld_st import MIN_BYTES, PAIRS, MeldStError, check_pair


def _pair(value: str) -> str:
    import argparse

    try:
        return check_pair(value)
    except MeldStError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _common(parser) -> None:
    parser.add_argument(
        "--root", required=True, help="the MELD-ST folder (holding ENG_JPN/ and ENG_DEU/) or one pair folder"
    )
    parser.add_argument("--pair", required=True, type=_pair, metavar="|".join(PAIRS), help="language pair")
    parser.add_argument(
        "--min-bytes",
        type=int,
        default=MIN_BYTES,
        help="skip audio files smaller than this, as the paper did (default: %(default)s, 1 kB)",
    )


def register(subparsers) -> None:
    datasets = subparsers.add_parser("datasets", help="turn a published corpus into a pairs file and SER manifests")
    corpora = datasets.add_subparsers(dest="dataset", required=True)
    meld = corpora.add_parser("meld-st", help="MELD-ST as distributed (CSV + ENG/JPN|DEU audio folders)")
    _common(meld)
    meld.add_argument("--out", required=True, help="folder for pairs*.csv, ser_*.csv and dataset.json")
    meld.set_defaults(handler=run_datasets_meld_st)

    reproduce = subparsers.add_parser("reproduce", help="reproduce the paper's Tables 1 and 2 and Figs. 1 and 2")
    corpora = reproduce.add_subparsers(dest="dataset", required=True)
    meld = corpora.add_parser("meld-st", help="MELD-ST: train the SER heads, evaluate the test split, print the tables")
    _common(meld)
    meld.add_argument("--out", help="output folder (default: ./reproduce-meld-st-<PAIR>)")
    add_engine_arguments(
        meld,
        default_profile="paper",
        profile_help="paper: emotion2vec_plus_large and the paper's models (needs --model-dir); "
        "lite: eGeMAPS, nothing to download (default: %(default)s)",
    )
    meld.add_argument(
        "--ser-per-language", action="store_true", help="one SER head per language instead of one shared by both"
    )
    meld.add_argument(
        "--balance",
        choices=("clustercentroids", "none"),
        default="clustercentroids",
        help="the head Table 1 uses (Table 2 reports both; default: the paper's %(default)s)",
    )
    meld.add_argument("--verbose", action="store_true", help="print every training epoch")
    meld.set_defaults(handler=run_reproduce_meld_st)


def run_datasets_meld_st(args) -> int:
    from worker.research.datasets.meld_st import format_counts, read_meld_st, write_dataset

    try:
        corpus = read_meld_st(args.root, args.pair, min_bytes=args.min_bytes)
        summary = write_dataset(corpus, args.out)
    except (MeldStError, OSError) as error:
        raise CommandError(str(error)) from None
    out = Path(args.out)
    print(format_counts(corpus))
    print(f"\nwrote to {out}: {', '.join(summary['files'].values())}, dataset.json")
    print(f"paths are relative to the pair folder {corpus.pair_dir} (the audio root). Next, for example:")
    print(
        f"  emopres evaluate {out / 'pairs_test.csv'} --audio-root {corpus.pair_dir} --profile paper --out report.json"
    )
    print(
        f"  (SER manifests {', '.join(v for k, v in summary['files'].items() if k.startswith('ser_'))}: "
        f"path, emotion, split, speaker, ...; audio root {corpus.pair_dir})"
    )
    return 0


def run_reproduce_meld_st(args) -> int:
    from cli.evaluate import evaluate_to_report
    from models.registry import ProfileError
    from models.ser.head import HeadError
    from models.ser.training import TrainingError
    from worker.engine.per_side import PerSideError
    from worker.research.reproduce import ReproduceConfig, ReproduceError, reproduce_meld_st

    model_dir = args.model_dir or os.environ.get("EMOPRES_MODEL_DIR") or None
    if args.profile == "paper" and not model_dir:
        raise CommandError(
            "the paper profile needs its models: pass --model-dir or set EMOPRES_MODEL_DIR "
            "(see `emopres models check`), or run --profile lite (no download; eGeMAPS instead "
            "of emotion2vec, so the numbers are not the paper's)"
        )
    out = Path(args.out or f"reproduce-meld-st-{args.pair}")
    config = ReproduceConfig(
        root=Path(args.root),
        pair=args.pair,
        out=out,
        profile=args.profile,
        model_dir=model_dir,
        device=args.device,
        fast=args.fast,
        ser_per_language=args.ser_per_language,
        balance=args.balance,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        jobs=args.jobs,
        cache_dir=cache_dir_from_args(args),
        max_seconds=args.max_seconds,
        min_bytes=args.min_bytes,
        verbose=args.verbose,
    )
    try:
        result = reproduce_meld_st(config, evaluate=evaluate_to_report)
    except (MeldStError, ReproduceError, PerSideError, TrainingError, ProfileError, HeadError) as error:
        raise CommandError(str(error)) from None
    print(result["text"]["table1"])
    print()
    print(result["text"]["table2"])
    print()
    figures = ", ".join(result["figures"]) or "none"
    print(f"wrote to {out}: report.json, reproduce.json, tables.md, {figures}, plots/, data/, ser/")
    if result["n_failed"]:
        print(f"{result['n_failed']} test pair(s) failed; see 'failures' in {out / 'report.json'}", file=sys.stderr)
    return 0
