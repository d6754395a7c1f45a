"""`emopres evaluate` and `emopres validate`: the offline evaluation of pairs files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli.engine_options import add_engine_arguments, cache_dir_from_args
from core.profiles import NO_SIDE_HEAD
from emopres_client.cli import CommandError
from emopres_client.pairs import ManifestError, read_pairs_file, uses_groups
from models.registry import ProfileError, ProfileSpec, load_head, load_side_head

# The engine (torch, openSMILE, the pipeline) is imported inside the handlers: building the parser for
# any `emopres` command, `submit --help` included, should not pay seconds of model-library imports.


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--audio-root", help="folder the pairs' paths are relative to (default: the pairs file's folder)"
    )
    parser.add_argument("--head", help="SER head directory (default: the profile's shipped/default head)")
    parser.add_argument(
        "--side-head",
        help="per-side SER head directory of the side-normalised reading (default: "
        f"the profile's, if it has one; {NO_SIDE_HEAD!r}: no side reading)",
    )
    add_engine_arguments(parser)


def register(subparsers) -> None:
    evaluate = subparsers.add_parser("evaluate", help="evaluate a pairs file (CSV/JSONL) offline")
    evaluate.add_argument("pairs", help="CSV or JSONL with pair_id, source, target[, label][, group column]")
    evaluate.add_argument("--out", help="write the JSON report here")
    evaluate.add_argument("--plots", metavar="DIR", help="write the plots (PNG, SVG, plots.json) in this folder")
    evaluate.add_argument("--html", metavar="FILE", help="write the report as one self-contained HTML page")
    evaluate.add_argument(
        "--group-column",
        help="column with speaker/dialogue ids: CIs resample groups (default: a 'group', else a 'speaker' column; "
        "'none': resample pairs)",
    )
    add_evaluation_arguments(evaluate)
    evaluate.set_defaults(handler=run_evaluate)

    validate = subparsers.add_parser("validate", help="check that every metric tracks a known preservation rate")
    validate.add_argument(
        "pairs", help="CSV shaped like shared/data/pairs/en-ja.csv (source, target_preserved, target_swapped, emotion)"
    )
    validate.add_argument("--rates", default="0,0.25,0.5,0.75,1", help="preservation rates of the simulated systems")
    validate.add_argument("--split", default=None, help="only rows of this split (e.g. test)")
    validate.add_argument("--out", help="write the JSON result here")
    add_evaluation_arguments(validate)
    validate.set_defaults(handler=run_validate)


def make_evaluator(args):
    from models.ser.head import HeadError
    from worker.engine.pipeline import Evaluator

    spec = ProfileSpec(args.profile, args.model_dir, args.device, args.fast)
    try:
        head = load_head(spec, args.head)
        return Evaluator(
            spec,
            head,
            n_jobs=args.jobs,
            cache_dir=cache_dir_from_args(args),
            max_seconds=args.max_seconds,
            side_head=load_side_head(spec, args.side_head, head),
        )
    except (HeadError, ProfileError) as error:
        raise CommandError(str(error)) from None


def progress_bar(total: int, description: str):
    """Files done, on stderr: redrawn on a terminal, a plain line every few seconds in a CI log."""
    from emopres_client.progress import Progress

    bar = Progress(description, "file", enabled=total > 0)
    bar.update(0, total)
    return bar


def path_resolver(root: Path):
    return lambda relative: str(root / relative)


def evaluate_to_report(
    evaluator, pairs, resolve, *, n_bootstrap: int, seed: int, use_groups: bool, job: dict, utterances=None
) -> dict:
    from worker.engine.report import report_for_evaluator

    if utterances is None:
        distinct_files = len({resolve(p.source) for p in pairs} | {resolve(p.target) for p in pairs})
        with progress_bar(distinct_files, "evaluating") as bar:
            rows, failures = evaluator.evaluate_pairs(pairs, resolve, progress=bar.advance)
    else:
        rows, failures = evaluator.evaluate_pairs(pairs, resolve, utterances=utterances)
    return report_for_evaluator(
        evaluator,
        rows=rows,
        failures=failures,
        pair_order=[p.pair_id for p in pairs],
        job=job,
        n_bootstrap=n_bootstrap,
        seed=seed,
        use_groups=use_groups,
    )


def run_evaluate(args) -> int:
    from worker.engine.report import format_summary, utc_now

    pairs_path = Path(args.pairs)
    try:
        pairs = read_pairs_file(pairs_path, group_column=args.group_column)
    except ManifestError as error:
        raise CommandError(str(error)) from None
    root = Path(args.audio_root) if args.audio_root else pairs_path.resolve().parent
    if not root.is_dir():
        raise CommandError(f"audio root {root} is not a folder")
    created = utc_now()
    with make_evaluator(args) as evaluator:
        report = evaluate_to_report(
            evaluator,
            pairs,
            path_resolver(root),
            n_bootstrap=args.bootstrap,
            seed=args.seed,
            use_groups=uses_groups(pairs, args.group_column),
            job={"id": None, "status": "succeeded", "created_at": created, "finished_at": None},
        )
    report["job"]["finished_at"] = utc_now()
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    if args.plots or args.html:
        from worker.render.html_report import audio_from_file, write_outputs
        from worker.render.html_sections import MiB

        files = {p.pair_id: {"source": root / p.source, "target": root / p.target} for p in pairs}
        write_outputs(
            report,
            plots_dir=args.plots,
            html_file=args.html,  # the page's default cap: 2 MiB a clip
            audio=lambda pair_id, side: audio_from_file(files[pair_id][side], 2 * MiB),
        )
    print(format_summary(report))
    if report["failures"]:
        print(f"\n{report['job']['n_failed']} pair(s) failed; see 'failures' in the report", file=sys.stderr)
    if report["job"]["n_failed"] == report["job"]["n_pairs"]:
        return 1
    return 0


def run_validate(args) -> int:
    from worker.research.validation import ValidationError, run_validation

    try:
        result = run_validation(args, make_evaluator, evaluate_to_report, progress_bar)
    except (ValidationError, ManifestError) as error:
        raise CommandError(str(error)) from None
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0
