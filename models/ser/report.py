"""SER training reports: per-epoch progress lines, the paper's Table 2, confusion matrices (the one
confusion plot of core.confusion_plot), the JSON and Markdown report and the head's metadata."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from core.confusion_plot import save_confusion_png
from models.ser.data import SPLITS
from models.ser.fit import RunResult, TrainConfig

NKULULEKO_NOTE = (
    "The paper states hidden layers of 64 and 32 units, ReLU and dropout 0.3; architecture 'paper' "
    "builds in->64->ReLU->Dropout->32->ReLU->Dropout->K. Nkululeko, the toolkit the paper used, builds "
    "Linear(in,32) -> ReLU -> Linear(32,64) -> Dropout(0.3) -> Linear(64,K) from the same configuration "
    "(it sorts the layers by width and its second ReLU overwrites the first under the same key): "
    "architecture 'nkululeko' (train-ser --architecture nkululeko)."
)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def epoch_printer(label: str, write: Callable[[str], None] = _stderr) -> Callable[[dict], None]:
    def report(row: dict) -> None:
        write(
            f"[{label}] epoch {row['epoch']:>3}/{row['max_epochs']}  loss {row['train_loss']:.4f}  "
            f"dev UA {row['dev_ua']:.4f}  WA {row['dev_wa']:.4f}  best epoch {row['best_epoch']}"
            + ("  *" if row["improved"] else "")
        )

    return report


def table2(runs: dict[str, RunResult] | dict[str, dict]) -> str:
    """The paper's Table 2 layout: UA and WA per split, one row per balancing setting."""
    lines = [
        "| balancing | train UA | train WA | dev UA | dev WA | test UA | test WA |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        metrics = run.metrics if isinstance(run, RunResult) else run["metrics"]
        cells = []
        for split in SPLITS:
            scores = metrics.get(split)
            cells += ["-", "-"] if not scores else [f"{scores['ua']:.3f}", f"{scores['wa']:.3f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], title: str, path: Path) -> Path:
    return save_confusion_png(confusion, classes, title, path)


def run_report(run: RunResult, classes: Sequence[str]) -> dict:
    report = {
        "balance": run.balance,
        "kept_epoch": run.fit.kept_epoch,
        "dev_ua_at_kept_epoch": run.fit.history[run.fit.kept_epoch - 1]["dev_ua"],
        "train_class_counts": dict(zip(classes, run.train_class_counts, strict=True)),
        "optimiser_class_counts": dict(zip(classes, run.fit.optimiser_class_counts, strict=True)),
        "metrics": run.metrics,
        "history": run.fit.history,
        "seconds": round(run.fit.seconds, 2),
    }
    if len(run.member_fits) > 1:  # the fields above describe the first network; metrics are the ensemble's
        report["members"] = [
            {
                "kept_epoch": f.kept_epoch,
                "dev_ua_at_kept_epoch": f.history[f.kept_epoch - 1]["dev_ua"],
                "seconds": round(f.seconds, 2),
            }
            for f in run.member_fits
        ]
        report["seconds"] = round(sum(f.seconds for f in run.member_fits), 2)
    return report


def recipe_metadata(config: TrainConfig) -> dict:
    return {
        "network": "feed-forward",
        "architecture": config.architecture,
        "hidden": list(config.hidden),
        "activation": "relu",
        "dropout": config.dropout,
        "batch_size": config.batch_size,
        "max_epochs": config.max_epochs,
        "optimiser": "adam",
        "learning_rate": config.learning_rate,
        "weight_decay": config.weight_decay,
        "loss": "cross-entropy",
        "epoch_selection": "best dev UA (first on ties)",
        "balancing_scope": "training split only",
        "scaler": "standard, fitted on the unbalanced training split",
        "seed": config.seed,
        "architecture_note": NKULULEKO_NOTE,
        **(
            {
                "augmentation": f"speed perturbation {', '.join(f'{f:g}' for f in config.speed_perturb)}: "
                "extra copies of the training split (not the paper's recipe)"
            }
            if config.speed_perturb
            else {}
        ),
        **(
            {
                "ensemble": f"{config.ensemble} networks (seeds {config.seed}-{config.seed + config.ensemble - 1}), "
                "each with its own dev-best epoch; probabilities averaged (not the paper's recipe)"
            }
            if config.ensemble > 1
            else {}
        ),
    }


def head_metadata(report: dict, run: RunResult, config: TrainConfig) -> dict:
    return {
        "normalization": report["normalization"],
        "recipe": recipe_metadata(config),
        "balance": run.balance,
        "kept_epoch": run.fit.kept_epoch if len(run.member_fits) <= 1 else [f.kept_epoch for f in run.member_fits],
        "training_data_sha256": report["training_data_sha256"],
        "feature_signature": report["feature_signature"],
        "split": report["split"],
        "scores": {split: {"ua": s["ua"], "wa": s["wa"], "n": s["n"]} for split, s in run.metrics.items()},
        "training_report": "report.json",
    }


def markdown_report(report: dict) -> str:
    lines = [
        f"# SER head training report ({report['feature_set']})",
        "",
        f"Classes: {', '.join(report['classes'])}. Utterances: {report['n_utterances']} "
        f"({', '.join(f'{k}: {v}' for k, v in report['corpora'].items())}).",
        f"Training data sha256: `{report['training_data_sha256']}`.",
        "",
        "## Table 2 (UA = unweighted accuracy = mean per-class recall; WA = accuracy)",
        "",
        report["table2"],
        "",
        f"Kept: balance={report['selected_balance']} ({report['selection_rule']}).",
        "",
    ]
    for name, run in report["runs"].items():
        lines += [
            f"## balance={name}",
            "",
            f"Kept epoch {run['kept_epoch']} of {len(run['history'])} (dev UA {run['dev_ua_at_kept_epoch']:.4f})"
            + (
                "."
                if "members" not in run
                else f" for the first of {len(run['members'])} networks; kept epochs "
                f"{[m['kept_epoch'] for m in run['members']]}, the head averages their probabilities."
            ),
            f"Training split class counts: {run['train_class_counts']}.",
            f"Class counts seen by the optimiser per epoch: {run['optimiser_class_counts']}.",
            "",
        ]
        for split, scores in run["metrics"].items():
            lines += [f"Confusion, {split} (rows gold, columns predicted; {', '.join(report['classes'])}):", "", "```"]
            lines += [" ".join(f"{v:>4}" for v in row) for row in scores["confusion"]]
            lines += ["```", ""]
    lines += ["## Recipe", "", "```json", json.dumps(report["recipe"], indent=2), "```", ""]
    return "\n".join(lines)
