"""`emopres validate`: do the metrics track a known emotion-preservation rate, and can they tell?

From pairs with a preserving and a swapping target per source (shared/data/pairs/en-ja.csv),
build systems that keep the emotion in a known share of pairs, evaluate each, and report for every
metric:

* its value per simulated system and its Spearman correlation with the true rate (order), and
* its sensitivity: the paired difference between the system that preserves every pair (rate 1)
  and the one that swaps every pair (rate 0) over the same sources, with the paired bootstrap's
  95% CI and p (worker.engine.corpus.compare_runs), and z = difference / SE where SE is the bootstrap
  standard error read from the percentile interval, (ci_high - ci_low) / (2 * 1.96). A metric can
  rank five systems in order and still not separate 0% from 100% preservation beyond noise: its z
  says so.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np

from core.catalogue import METRICS, VALIDATED_METRICS
from core.metrics import MetricUndefined, spearman
from emopres_client.pairs import PairSpec
from worker.engine.corpus import compare_runs

REQUIRED = ("source", "target_preserved", "target_swapped", "emotion")
EXTREME_RATES = (0.0, 1.0)  # the swapping and the preserving system: what the sensitivity compares
Z_95 = NormalDist().inv_cdf(0.975)


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
    return [
        PairSpec(
            row["pair_id"],
            row["source"],
            row["target_preserved"] if index in preserved else row["target_swapped"],
            row["emotion"],
            row.get("speaker"),
        )
        for index, row in enumerate(rows)
    ]


def correlation_table(rates: list[float], reports: list[dict]) -> dict[str, dict]:
    table = {}
    for metric in (m for m in VALIDATED_METRICS if m in reports[0]["corpus"]):  # a report may lack a new one
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


def z_from_interval(diff: float, ci_low: float, ci_high: float) -> float:
    """diff / SE with the standard error read from a 95% percentile interval (width / (2 * 1.96))."""
    se = (ci_high - ci_low) / (2 * Z_95)
    if not se > 0:
        raise MetricUndefined("the bootstrap interval has zero width: no standard error")
    return diff / se


def sensitivity(
    preserved_pairs: list[dict],
    swapped_pairs: list[dict],
    classes: list[str],
    metrics,
    *,
    n_bootstrap: int,
    seed: int,
    unavailable: dict | None = None,
) -> dict[str, dict]:
    """Per metric: preserved and swapped values, their paired difference with 95% CI, z and p.

    Both lists are report rows with the same pair ids (the same sources); the difference is
    preserved - swapped, bootstrapped over pairs (worker.engine.corpus.compare_runs). With n_bootstrap 0 there
    is no CI, z or p (reason says so).
    """
    compared = compare_runs(
        swapped_pairs,
        preserved_pairs,
        classes,
        [m for m in metrics if m in METRICS],
        n_bootstrap=n_bootstrap,
        seed=seed,
        unavailable=unavailable,
    )
    out = {}
    for metric in metrics:
        if metric not in METRICS:
            continue
        entry = compared[metric]
        row = {
            "preserved": entry["b"],
            "swapped": entry["a"],
            "diff": entry["diff"],
            "ci_low": entry["ci_low"],
            "ci_high": entry["ci_high"],
            "z": None,
            "p_value": entry["p_value"],
            "n": entry["n"],
            "reason": entry["reason"],
        }
        if row["diff"] is not None and row["reason"] is None:
            if n_bootstrap <= 0:
                row["reason"] = "--bootstrap 0: no CI, z or p"
            else:
                try:
                    row["z"] = z_from_interval(row["diff"], row["ci_low"], row["ci_high"])
                except MetricUndefined as error:
                    row["reason"] = error.reason
        out[metric] = row
    return out


def add_sensitivity(
    table: dict[str, dict], preserved_report: dict, swapped_report: dict, *, n_bootstrap: int, seed: int
) -> None:
    """Put each tracked metric's preserved-vs-swapped sensitivity into its table entry ("sensitivity")."""
    classes = list(preserved_report["corpus"].get("ser", {}).get("classes") or [])
    unavailable = {
        m: preserved_report["corpus"][m]["reason"]
        for m in table
        if m in preserved_report["corpus"]
        and preserved_report["corpus"][m].get("n") == 0
        and preserved_report["corpus"][m].get("value") is None
        and preserved_report["corpus"][m].get("reason")
    }
    rows = sensitivity(
        preserved_report["pairs"],
        swapped_report["pairs"],
        classes,
        list(table),
        n_bootstrap=n_bootstrap,
        seed=seed,
        unavailable=unavailable,
    )
    for metric, entry in table.items():
        entry["sensitivity"] = rows.get(metric)


def check_analysed(utterances: dict, root: Path) -> None:
    """Refuse to report correlations of nothing: say why the audio could not be analysed."""
    errors = [u.error for u in utterances.values() if u.error]
    if errors and len(errors) == len(utterances):
        raise ValidationError(
            f"no audio file could be analysed (first: {errors[0]}); paths are resolved under {root}: check --audio-root"
        )
    if errors:
        print(
            f"warning: {len(errors)} of {len(utterances)} audio files failed (first: {errors[0]}); "
            "their pairs are listed as failures",
            file=sys.stderr,
        )


def run_validation(args, make_evaluator, evaluate_to_report, progress_bar) -> dict:
    path = Path(args.pairs)
    rows = read_validation_pairs(path, args.split)
    rates = parse_rates(args.rates)
    root = Path(args.audio_root) if args.audio_root else path.resolve().parent
    resolve = lambda relative: str(root / relative)  # noqa: E731
    order = np.random.default_rng(args.seed).permutation(len(rows))
    evaluated = sorted(set(rates) | set(EXTREME_RATES))  # the sensitivity needs rates 0 and 1 even if not asked
    systems = [simulated_system(rows, rate, order) for rate in evaluated]
    with make_evaluator(args) as evaluator:
        files = [resolve(p) for row in rows for p in (row["source"], row["target_preserved"], row["target_swapped"])]
        with progress_bar(len(set(files)), "analysing") as bar:
            utterances = evaluator.analyze_files(files, progress=bar.advance)
        check_analysed(utterances, root)
        reports = [
            evaluate_to_report(
                evaluator,
                pairs,
                resolve,
                n_bootstrap=args.bootstrap,
                seed=args.seed,
                use_groups=False,
                job={"id": f"rate={rate:g}"},
                utterances=utterances,
            )
            for rate, pairs in zip(evaluated, systems, strict=True)
        ]
    by_rate = dict(zip(evaluated, reports, strict=True))
    reports = [by_rate[rate] for rate in rates]
    table = correlation_table(rates, reports)
    add_sensitivity(table, by_rate[1.0], by_rate[0.0], n_bootstrap=args.bootstrap, seed=args.seed)
    print(format_table(rates, table))
    return {
        "rates": rates,
        "n_pairs": len(rows),
        "n_failed": [r["job"]["n_failed"] for r in reports],
        "signature": reports[0]["signature"],
        "metrics": table,
        "sensitivity": {
            "preserved": "rate 1 (every pair keeps the emotion)",
            "swapped": "rate 0 (every pair swaps it)",
            "diff": "preserved - swapped",
            "z": "diff / SE, SE = (ci_high - ci_low) / (2 * 1.96) of the paired bootstrap",
            "n_bootstrap": args.bootstrap,
            "seed": args.seed,
        },
    }


def format_table(rates: list[float], table: dict[str, dict]) -> str:
    """Values per rate, Spearman, then the preserved-vs-swapped difference with its 95% CI, z and p."""
    header = (
        f"{'metric':<24}"
        + "".join(f"{'r=' + format(r, 'g'):>9}" for r in rates)
        + f"{'spearman':>10}"
        + f"{'diff(1-0)':>11}{'95% CI':>20}{'z':>8}{'p':>8}"
    )
    lines = [header]
    for metric, entry in table.items():
        cells = "".join(f"{'null':>9}" if v is None else f"{v:9.3f}" for v in entry["values"])
        rho = f"{entry['spearman']:10.3f}" if entry["spearman"] is not None else f"{'null':>10}"
        sens = entry.get("sensitivity") or {}
        if sens.get("diff") is None:
            tail = f"{'null':>11}"
        else:
            interval = "" if sens["ci_low"] is None else f"[{sens['ci_low']:.3f}, {sens['ci_high']:.3f}]"
            z = f"{sens['z']:8.2f}" if sens["z"] is not None else f"{'null':>8}"
            p = f"{sens['p_value']:8.4f}" if sens["p_value"] is not None else f"{'null':>8}"
            tail = f"{sens['diff']:11.3f}{interval:>20}{z}{p}"
        reasons = [
            r
            for r in (entry["reason"], sens.get("reason"))
            if r and not (entry["reason"] and entry["reason"] in r and r != entry["reason"])
        ]
        lines.append(
            f"{metric:<24}{cells}{rho}{tail}" + (f"  ({'; '.join(dict.fromkeys(reasons))})" if reasons else "")
        )
    return "\n".join(lines)
