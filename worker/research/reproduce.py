"""Reproduce the paper on MELD-ST: SER heads by the paper's recipe, the test split evaluated, Tables 1 and 2.

Atmaja, Shirai, Sakti, "Measuring Emotion Preservation in Expressive Speech-to-Speech Translation"
(NAIST) measure on MELD-ST's test split how much of the English source's emotion its Japanese or
German dubbing keeps. :func:`reproduce_meld_st` runs that protocol end to end:

1. read the MELD-ST pair folder (:mod:`worker.research.datasets.meld_st`; files under 1 kB skipped and
   counted) and write the pairs file and the per-language SER manifests;
2. train SER heads with the paper's recipe (:func:`models.ser.training.train_ser`: 64-32 MLP,
   dropout 0.3, batch 2, at most 80 epochs, dev-UA epoch selection), with ClusterCentroids
   balancing and without: one head shared by both languages (trained on both languages' training
   splits), or one head per language (``ser_per_language``). Features: emotion2vec_plus_large for
   the ``paper`` profile, eGeMAPS functionals for ``lite``;
3. Table 2: UA and WA of every head on every language's dev and test split;
4. evaluate the test pairs with the head of the chosen balancing (ClusterCentroids, the paper's,
   by default): corpus metrics with 95% bootstrap CIs that resample whole dialogues;
5. Table 1 (BAR, EPR, kappa, emo-sim, va-sim, autoPCP, Vsim, Pause, Rate) beside the paper's
   values (the tables and the published values: :mod:`worker.research.tables`), Fig. 1 (SER
   confusion per side) and Fig. 2 (uncertainty vs agreement; also with the
   entropy rescaled within the test set, as nkululeko plots it) as PNG, the
   report JSON and ``reproduce.json`` (everything above, machine-readable).
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emopres_client.pairs import PairSpec
from models.registry import ProfileSpec
from models.ser.head import SerHead
from worker.engine.per_side import PerSideEvaluator, mark_per_side_heads
from worker.engine.pipeline import DEFAULT_MAX_SECONDS, Evaluator
from worker.engine.report import report_for_evaluator, utc_now
from worker.research.datasets.meld_st import (
    SOURCE_LANGUAGE,
    MeldSt,
    format_counts,
    manifest_name,
    read_meld_st,
    write_dataset,
)
from worker.research.tables import (
    BALANCINGS,
    PUBLISHED_SOURCE,
    PUBLISHED_TABLE2,
    format_table1,
    format_table2,
    published_value,
    table1_rows,
)

PROFILE_FEATURES = {"lite": "egemaps", "paper": "emotion2vec"}


class ReproduceError(ValueError):
    """The protocol cannot run on this input; the message is for the user."""


@dataclass
class ReproduceConfig:
    root: Path
    pair: str
    out: Path
    profile: str = "paper"
    model_dir: str | None = None
    device: str = "cpu"
    fast: bool = False
    ser_per_language: bool = False
    balance: str = "clustercentroids"  # the head that Table 1 uses
    n_bootstrap: int = 1000
    seed: int = 12345
    jobs: int | None = None
    cache_dir: Path | None = None  # None: a temporary folder, removed at the end
    max_seconds: float | None = DEFAULT_MAX_SECONDS
    min_bytes: int | None = None  # None: meld_st.MIN_BYTES
    train_config: object | None = None  # models.ser.training.TrainConfig (None: the paper's recipe)
    verbose: bool = False  # every training epoch on the log
    log: Callable[[str], None] = field(default=lambda message: print(message, file=sys.stderr, flush=True))


def default_evaluate(
    evaluator: Evaluator, pairs: list[PairSpec], resolve, *, n_bootstrap: int, seed: int, use_groups: bool, job: dict
) -> dict:
    rows, failures = evaluator.evaluate_pairs(pairs, resolve)
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


# ------------------------------------------------------------------------------------------------
# The protocol
# ------------------------------------------------------------------------------------------------


def _training_log(config: ReproduceConfig) -> Callable[[str], None]:
    epoch_line = re.compile(r"^\[\w+\] epoch ")
    if config.verbose:
        return config.log
    return lambda message: None if epoch_line.match(message) else config.log(message)


def _classes(datasets) -> list[str]:
    from models.ser.training import MELD_CLASSES

    present = set()
    for dataset in datasets:
        present |= set(dataset.labels[dataset.splits == "train"].tolist())
    return [c for c in MELD_CLASSES if c in present] + sorted(present - set(MELD_CLASSES))


def _scores(head: SerHead, features: np.ndarray, labels: np.ndarray, splits: np.ndarray) -> dict:
    from models.ser.training import classification_scores

    classes = list(head.classes)
    predicted = head.predict_proba(features).argmax(axis=1)
    out = {}
    for split in ("train", "dev", "test"):
        mask = splits == split
        known = mask & np.isin(labels, classes)
        if known.any():
            targets = np.array([classes.index(label) for label in labels[known]])
            out[split] = classification_scores(targets, predicted[known], len(classes))
            out[split]["n_unknown_label"] = int((mask & ~known).sum())
    return out


def _write_figures(report: dict, out: Path, log) -> dict:
    """Fig. 1 (confusion per side), Fig. 2 (uncertainty vs agreement; also rescaled as nkululeko does) via
    worker.render.plots, plus every other plot."""
    import json

    from worker.render.plots import render, write_plots
    from worker.render.uncertainty_rescaled import rescaled_figure

    index = write_plots(report, out / "plots", formats=("png",))
    figures = {}
    for figure, name in (
        ("fig1_confusion_source.png", "confusion_source"),
        ("fig1_confusion_target.png", "confusion_target"),
        ("fig2_uncertainty.png", "uncertainty"),
    ):
        if name in index["plots"]:
            shutil.copyfile(out / "plots" / f"{name}.png", out / figure)
            figures[figure] = name
        else:
            log(f"{figure} not drawn: {index['skipped'].get(name, 'not available')}")
    figure = "fig2_uncertainty_rescaled.png"  # Fig. 2 as nkululeko scales it (labelled); the default stays H / log K
    spec, reason = rescaled_figure(report)
    if spec is None:
        log(f"{figure} not drawn: {reason}")
    else:
        (out / figure).write_bytes(render(spec, "png"))
        (out / "plots" / "uncertainty_rescaled.json").write_text(json.dumps(spec.data, indent=1))
        figures[figure] = spec.name
    return figures


def reproduce_meld_st(config: ReproduceConfig, evaluate: Callable | None = None) -> dict:
    """Run the whole protocol; write everything under ``config.out``; return ``reproduce.json``'s content.

    ``evaluate(evaluator, pairs, resolve, n_bootstrap=, seed=, use_groups=, job=)`` -> report
    (default: without a progress bar; the CLI passes its own).
    """
    import json

    from models.ser.training import (
        TrainConfig,
        TrainingError,
        extract_features,
        load_manifest,
        make_extractor,
        train_ser,
    )

    if config.profile not in PROFILE_FEATURES:
        raise ReproduceError(f"unknown profile {config.profile!r} (choose {' or '.join(PROFILE_FEATURES)})")
    if config.balance not in BALANCINGS:
        raise ReproduceError(f"unknown balancing {config.balance!r} (choose {' or '.join(BALANCINGS)})")
    log = config.log
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    evaluate = evaluate or default_evaluate
    started = utc_now()

    # 1. the dataset
    kwargs = {} if config.min_bytes is None else {"min_bytes": config.min_bytes}
    corpus: MeldSt = read_meld_st(config.root, config.pair, **kwargs)
    dataset_summary = write_dataset(corpus, out / "data")
    log(format_counts(corpus))
    test_pairs = corpus.pair_specs("test")
    if not test_pairs:
        raise ReproduceError(f"MELD-ST {corpus.pair}: no usable test pairs")

    with ExitStack() as stack:
        cache_dir = (
            Path(config.cache_dir)
            if config.cache_dir
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="emopres-reproduce-")))
        )
        # 2. SER heads
        datasets = {
            language: load_manifest(
                out / "data" / manifest_name(language), corpus.pair_dir, split_column="split", corpus=language
            )
            for language in corpus.languages
        }
        classes = _classes(datasets.values())
        features = PROFILE_FEATURES[config.profile]
        try:
            extractor = make_extractor(features, config.model_dir)
        except TrainingError as error:
            raise ReproduceError(str(error)) from None
        train_config = config.train_config or TrainConfig()
        if config.ser_per_language:
            scopes = {language: datasets[language] for language in corpus.languages}
            heads_text = "one head per language"
        else:
            from models.ser.training import concat_datasets

            scopes = {"shared": concat_datasets(list(datasets.values()))}
            heads_text = "one head shared by both languages"
        training_log = _training_log(config)
        heads: dict[tuple[str, str], SerHead] = {}
        training: dict[str, dict] = {}
        for scope, dataset in scopes.items():
            for balance in BALANCINGS:
                folder = out / "ser" / scope.lower() / balance
                log(
                    f"SER head ({scope}, balancing {BALANCINGS[balance]}): training on "
                    f"{int((dataset.splits == 'train').sum())} utterances"
                )
                report = train_ser(
                    dataset,
                    folder,
                    features=features,
                    balance=balance,
                    config=train_config,
                    classes=classes,
                    cache_dir=cache_dir,
                    extractor=extractor,
                    log=training_log,
                    extra_metadata={"source": f"emopres reproduce meld-st {corpus.pair} ({scope})"},
                )
                heads[(scope, balance)] = SerHead.load(folder)
                run = report["runs"][balance]
                training[f"{scope}/{balance}"] = {
                    "folder": str(folder.relative_to(out)),
                    "kept_epoch": run["kept_epoch"],
                    "dev_ua_at_kept_epoch": run["dev_ua_at_kept_epoch"],
                    "head_sha256": report.get("head_sha256"),
                }

        # 3. Table 2: every head on its language(s)
        table2 = []
        for language in corpus.languages:
            dataset = datasets[language]
            matrix, _ = extract_features(dataset.paths, extractor, cache_dir)
            scope = language if config.ser_per_language else "shared"
            for balance in BALANCINGS:
                scores = _scores(heads[(scope, balance)], matrix, dataset.labels, dataset.splits)
                published = PUBLISHED_TABLE2.get(corpus.pair, {}).get(language, {}).get(balance, {})
                table2.append(
                    {
                        "language": language,
                        "balance": balance,
                        "head": f"{scope}/{balance}",
                        **{
                            f"{split}_{k}": (scores.get(split) or {}).get(k)
                            for split in ("train", "dev", "test")
                            for k in ("ua", "wa", "n")
                        },
                        "confusion_test": (scores.get("test") or {}).get("confusion"),
                        "paper_test_ua": published_value(published.get("ua")),
                        "paper_test_wa": published_value(published.get("wa")),
                        "paper_test_ua_text": published.get("ua"),
                        "paper_test_wa_text": published.get("wa"),
                    }
                )
        del extractor  # the paper profile's models: free them before the evaluator loads its own

        # 4. the test pairs
        spec = ProfileSpec(config.profile, config.model_dir, config.device, config.fast)
        engine = {"n_jobs": config.jobs, "cache_dir": cache_dir, "max_seconds": config.max_seconds}
        target_language = corpus.target_language
        if config.ser_per_language:
            evaluator = PerSideEvaluator(
                spec, heads[(SOURCE_LANGUAGE, config.balance)], heads[(target_language, config.balance)], **engine
            )
        else:
            evaluator = Evaluator(spec, heads[("shared", config.balance)], **engine)
        job = {
            "id": f"reproduce-meld-st-{corpus.pair}-test",
            "status": "succeeded",
            "created_at": started,
            "finished_at": None,
        }
        with evaluator:
            log(f"evaluating {len(test_pairs)} test pairs ({config.profile} profile)")
            report = evaluate(
                evaluator,
                test_pairs,
                lambda relative: str(corpus.pair_dir / relative),
                n_bootstrap=config.n_bootstrap,
                seed=config.seed,
                use_groups=True,
                job=job,
            )
        if config.ser_per_language:
            mark_per_side_heads(
                report, heads[(SOURCE_LANGUAGE, config.balance)], heads[(target_language, config.balance)]
            )
        report["job"]["finished_at"] = utc_now()

    # 5. tables, figures, files
    (out / "report.json").write_text(json.dumps(report, indent=1))
    rows1 = table1_rows(report, corpus.pair)
    text1 = format_table1(
        rows1, pair=corpus.pair, report=report, heads=heads_text, balance=config.balance, profile=config.profile
    )
    feature_set = next(iter(heads.values())).feature_set
    text2 = format_table2(table2, pair=corpus.pair, heads=heads_text, feature_set=feature_set)
    (out / "tables.md").write_text(text1 + "\n\n" + text2 + "\n")
    figures = _write_figures(report, out, log)
    result = {
        "pair": corpus.pair,
        "profile": config.profile,
        "heads": "per-language" if config.ser_per_language else "shared",
        "balance_for_table1": config.balance,
        "signature": report["signature"],
        "dataset": dataset_summary,
        "classes": classes,
        "ser_training": training,
        "table1": rows1,
        "table2": table2,
        "published_source": PUBLISHED_SOURCE,
        "n_failed": report["job"]["n_failed"],
        "figures": figures,
        "files": {"report": "report.json", "tables": "tables.md", "plots": "plots/", "data": "data/", "ser": "ser/"},
        "text": {"table1": text1, "table2": text2},
    }
    (out / "reproduce.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    return result
