"""Quality studies of the lite SER head (eGeMAPS -> paper MLP) on the labelled speech of the shared data folder
($EMOPRES_SHARED_DATA, else ../shared/data), one entry point for all of them:

    python bench/ser_quality.py [--seeds 3] [--only NAME ...]           # bench/ser_heads.py
    python bench/ser_quality.py --loco [VARIANT ...] [--seeds N]        # bench/ser_loco.py: leave one corpus out
    python bench/ser_quality.py --tables .cache/ser_quality.json        # bench/ser_loco.py: its markdown tables
    python bench/ser_quality.py --write-pairs [DIR]                     # bench/ser_pairs.py
    python bench/ser_quality.py --ship --ensemble 5 --speed-perturb 0.9 1.1   # bench/ser_ship.py: writes
                                                                              # models/artifacts/ser_lite
    python bench/ser_quality.py --ship-multi VARIANT --ensemble 5       # bench/ser_ship.py: all four corpora
    python bench/ser_quality.py --rescore DIR [--by-speaker]            # bench/ser_ship.py: score a saved head again

Without a study flag: the first study (bench/ser_heads.py) on RAVDESS and JVNV, mean +- sd over seeds:

  in-language   train RAVDESS actors 01-14, dev 15-17, test 18-20 (unseen speakers; the split of
                pairs/en-ja.csv)
  cross-lang    the same head tested on all of JVNV (Japanese, 6 classes, never seen)
  reverse       train on JVNV (utterance split by number % 5), test on RAVDESS test actors, 6 shared classes
  both          train RAVDESS train + JVNV train, dev both devs; test RAVDESS test and JVNV test
for variants: calm handling, balancing, per-utterance vs per-side (per-corpus) standardisation,
training-data augmentation.

Common code (corpora, splits, labels, features) is in bench/ser_common.py. Features are cached under
.cache/features (extracted once per file and augmentation).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# SPLIT_RULE_TEXT stays importable from here: the model cards cite it as bench/ser_quality.py's
from ser_common import CORPORA, DATA, ROOT, SPLIT_RULE_TEXT, load_all  # noqa: F401
from ser_heads import study
from ser_loco import LOCO_VARIANTS, all_corpora_markdown, loco, loco_markdown, selection_score
from ser_pairs import PAIR_NAMES, PAIRS_CACHE, build_pairs, write_pairs
from ser_ship import rescore, ship, ship_multi


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--json", type=Path, default=ROOT / ".cache" / "ser_quality.json")
    parser.add_argument("--ship", action="store_true", help="train the shipped head (models/artifacts/ser_lite)")
    parser.add_argument(
        "--ensemble",
        type=int,
        default=1,
        help="with --ship: one head averaging this many networks (seeds 1..N) instead of "
        "the best of --seeds single networks",
    )
    parser.add_argument(
        "--speed-perturb",
        type=float,
        nargs="*",
        default=[],
        help="with --ship: speed-perturbed copies of the training split at these factors",
    )
    parser.add_argument(
        "--loco",
        nargs="*",
        metavar="VARIANT",
        help=f"leave-one-corpus-out study of these variants ({', '.join(LOCO_VARIANTS)}; "
        "none given: all); results to --json",
    )
    parser.add_argument(
        "--write-pairs",
        type=Path,
        nargs="?",
        const=PAIRS_CACHE,
        default=None,
        metavar="DIR",
        help=f"write en-ja/en-de/en-am pairs CSVs whose targets follow the target corpus's split "
        f"(NAME-split-targets.csv; default folder {PAIRS_CACHE}); `emopres validate` reads them "
        "with --audio-root ../shared/data",
    )
    parser.add_argument("--bootstrap", type=int, default=2000, help="paired bootstrap resamples in --loco")
    parser.add_argument(
        "--tables",
        type=Path,
        nargs="+",
        default=None,
        metavar="JSON",
        help="print the markdown tables of --loco results",
    )
    parser.add_argument(
        "--ship-multi",
        metavar="VARIANT",
        default=None,
        help="train the shipped head on all four corpora with this LOCO variant (and --ensemble)",
    )
    parser.add_argument(
        "--rescore",
        type=Path,
        default=None,
        metavar="DIR",
        help="score a saved head again on every corpus split and test pair set (no training)",
    )
    parser.add_argument(
        "--by-speaker",
        action="store_true",
        help="with --rescore: standardise each speaker on its own (a per_side head)",
    )
    parser.add_argument("--selection", default="", help="with --ship-multi: how the variant was chosen (recorded)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="with --ship-multi: the head's folder (default: models/artifacts/ser_lite, or "
        "models/artifacts/ser_lite_side for a per-side variant)",
    )
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"no data at {DATA}", file=sys.stderr)
        return 1
    if args.write_pairs is not None:
        data = load_all(CORPORA)
        for corpus, name in PAIR_NAMES.items():
            rows = build_pairs(data, corpus)
            path = write_pairs(rows, args.write_pairs / f"{name}-split-targets.csv")
            counts = {split: sum(row["split"] == split for row in rows) for split in ("train", "dev", "test")}
            print(f"{path}: {len(rows)} pairs ({counts})")
        return 0
    if args.tables:
        results = {}
        for path in args.tables:
            results.update({k: v for k, v in json.loads(path.read_text()).items() if k.startswith("loco:")})
        print("Selection data (left-out corpus, non-test part; dev-source pairs):\n")
        print(loco_markdown(results, "select"))
        print(
            "\nselection score (mean left-out non-test UA): "
            + ", ".join(f"{k.removeprefix('loco:')} {selection_score(v):.3f}" for k, v in results.items())
        )
        print("\nReport data (left-out corpus, test part; test-source pairs; no choice looked at it):\n")
        print(loco_markdown(results, "test"))
        print("\nTrained on all four corpora (test parts):\n")
        print(all_corpora_markdown(results))
        return 0
    if args.rescore is not None:
        rescore(load_all(CORPORA), args.rescore, args.by_speaker)
        return 0
    if args.ship_multi is not None:
        from models.ser.head import SHIPPED_LITE_HEAD, SHIPPED_LITE_SIDE_HEAD

        side = LOCO_VARIANTS.get(args.ship_multi, {}).get("norm") in ("side", "speaker")
        out = args.out or (SHIPPED_LITE_SIDE_HEAD if side else SHIPPED_LITE_HEAD)
        ship_multi(load_all(CORPORA), args.ship_multi, max(1, args.ensemble), out, args.selection)
        return 0
    if args.loco is not None:
        data = load_all(CORPORA)
        names = args.loco or list(LOCO_VARIANTS)
        unknown = [n for n in names if n not in LOCO_VARIANTS]
        if unknown:
            parser.error(f"unknown variant(s) {', '.join(unknown)}")
        results = loco(data, names, seeds=tuple(range(1, args.seeds + 1)), n_bootstrap=args.bootstrap)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        previous = json.loads(args.json.read_text()) if args.json.is_file() else {}
        previous.update({f"loco:{k}": v for k, v in results.items()})
        args.json.write_text(json.dumps(previous, indent=2, default=str))
        return 0
    data = load_all()
    if args.ship:
        from models.ser.head import SHIPPED_LITE_HEAD

        seeds = (1,) if args.ensemble > 1 else tuple(range(1, args.seeds + 1))
        ship(data, seeds, SHIPPED_LITE_HEAD, ensemble=args.ensemble, speed=tuple(args.speed_perturb))
        return 0
    results = study(data, seeds=tuple(range(1, args.seeds + 1)), only=args.only)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.json.read_text()) if args.json.is_file() else {}
    previous.update({r["name"]: r for r in results})
    args.json.write_text(json.dumps(previous, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
