"""`emopres validate`: do the metrics track a known emotion-preservation rate?

From pairs with a preserving and a swapping target per source (shared/data/pairs/en-ja.csv),
build systems that keep the emotion in a known share of pairs, evaluate each, and report every
metric's Spearman correlation with the true rate.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from core.catalogue import VALIDATED_METRICS
from core.metrics import MetricUndefined, spearman
from worker.pairs import PairSpec

REQUIRED = ("source", "target_preserved", "target_swapped", "emotion")


class ValidationError(ValueError):
    pass


def read_validation_pairs(path: Path, split: str | None) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise ValidationError(f"cannot read {path}: {error.strerror}") from None
    if not rows:
        raise ValidationError(f"{path} has no rows")
    missing = [c for c in REQUIRED if c not in rows[0]]
    if missing:
        raise ValidationError(f"missing column(s): {', '.join(missing)} (need {', '.join(REQUIRED)})")
    if split is not None:
        if "split" not in rows[0]:
            raise ValidationError("--split given but the file has no 'split' column")
        rows = [r for r in rows if r["split"] == split]
        if not rows:
            raise ValidationError(f"no rows with split {split!r}")
    for number, row in enumerate(rows):
        row.setdefault("pair_id", f"pair-{number:05d}")
    return rows


def parse_rates(text: str) -> list[float]:
    try:
        rates = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValidationError(f"--rates must be comma-separated numbers in [0, 1], got {text!r}") from None
    if len(rates) < 3 or rates[0] < 0 or rates[-1] > 1:
        raise ValidationError("--rates needs at least 3 distinct values in [0, 1]")
    return rates


def simulated_system(rows: list[dict], rate: float, order: np.ndarray) -> list[PairSpec]:
    """Pairs whose first round(rate * n) positions of `order` keep the emotion: nested across rates."""
    preserved = set(order[: int(round(rate * len(rows)))].tolist())
    return [PairSpec(row["pair_id"], row["source"],
                     row["target_preserved"] if index in preserved else row["target_swapped"],
                     row["emotion"], row.get("speaker"))
            for index, row in enumerate(rows)]


def correlation_table(rates: list[float], reports: list[dict]) -> dict[str, dict]:
    table = {}
    for metric in VALIDATED_METRICS:
        values = [report["corpus"][metric]["value"] for report in reports]
        entry: dict = {"values": values}
        if all(value is None for value in values):  # the metric's own reason, not Spearman's "n=0"
            entry["spearman"], entry["reason"] = None, reports[0]["corpus"][metric]["reason"]
            table[metric] = entry
            continue
        try:
            entry["spearman"], entry["reason"] = spearman(rates, values), None
        except MetricUndefined as error:
            entry["spearman"], entry["reason"] = None, error.reason
        table[metric] = entry
    return table


def check_analysed(utterances: dict, root: Path) -> None:
    """Refuse to report correlations of nothing: say why the audio could not be analysed."""
    errors = [u.error for u in utterances.values() if u.error]
    if errors and len(errors) == len(utterances):
        raise ValidationError(f"no audio file could be analysed (first: {errors[0]}); "
                              f"paths are resolved under {root}: check --audio-root")
    if errors:
        print(f"warning: {len(errors)} of {len(utterances)} audio files failed (first: {errors[0]}); "
              "their pairs are listed as failures", file=sys.stderr)


def run_validation(args, make_evaluator, evaluate_to_report, progress_bar) -> dict:
    path = Path(args.pairs)
    rows = read_validation_pairs(path, args.split)
    rates = parse_rates(args.rates)
    root = Path(args.audio_root) if args.audio_root else path.resolve().parent
    resolve = lambda relative: str(root / relative)  # noqa: E731
    order = np.random.default_rng(args.seed).permutation(len(rows))
    systems = [simulated_system(rows, rate, order) for rate in rates]
    with make_evaluator(args) as evaluator:
        files = [resolve(p) for row in rows for p in (row["source"], row["target_preserved"], row["target_swapped"])]
        with progress_bar(len(set(files)), "analysing") as bar:
            utterances = evaluator.analyze_files(files, progress=bar.update)
        check_analysed(utterances, root)
        reports = [evaluate_to_report(evaluator, pairs, resolve, n_bootstrap=args.bootstrap, seed=args.seed,
                                      use_groups=False, job={"id": f"rate={rate:g}"}, utterances=utterances)
                   for rate, pairs in zip(rates, systems)]
    table = correlation_table(rates, reports)
    print(format_table(rates, table))
    return {"rates": rates, "n_pairs": len(rows), "n_failed": [r["job"]["n_failed"] for r in reports],
            "signature": reports[0]["signature"], "metrics": table}


def format_table(rates: list[float], table: dict[str, dict]) -> str:
    header = f"{'metric':<24}" + "".join(f"{'r=' + format(r, 'g'):>9}" for r in rates) + f"{'spearman':>10}"
    lines = [header]
    for metric, entry in table.items():
        cells = "".join(f"{'null':>9}" if v is None else f"{v:9.3f}" for v in entry["values"])
        rho = f"{entry['spearman']:10.3f}" if entry["spearman"] is not None else f"  {entry['reason']}"
        lines.append(f"{metric:<24}{cells}{rho}")
    return "\n".join(lines)
