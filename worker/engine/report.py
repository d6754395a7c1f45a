"""The versioned JSON report (its shape: docs/metrics.md) and its printed summary."""

from __future__ import annotations

from datetime import UTC, datetime

from core import __version__
from core.catalogue import HEADLINE_METRICS
from worker.engine.corpus import compute_corpus
from worker.engine.trust import summarise

SCHEMA_VERSION = "1"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def make_signature(
    profile_name: str,
    profile_parts: list[str],
    head_sha256: str,
    prosody: str,
    *,
    n_bootstrap: int,
    seed: int,
    unit: str,
) -> str:
    parts = [
        f"profile:{profile_name}",
        f"ser:{head_sha256[:12]}",
        *profile_parts,
        prosody,
        f"bs:{n_bootstrap}",
        f"seed:{seed}",
        f"unit:{unit}",
        f"emopres:{__version__}",
    ]
    return "|".join(parts)


def build_report(
    *,
    job: dict,
    pairs: list[dict],
    failures: list[dict],
    classes: list[str],
    profile_name: str,
    profile_parts: list[str],
    prosody: str,
    head_sha256: str,
    models: dict,
    n_bootstrap: int,
    seed: int,
    use_groups: bool,
    unavailable: dict[str, str],
) -> dict:
    order = {pair_id: i for i, pair_id in enumerate(job.get("pair_order", []))}
    pairs = sorted(pairs, key=lambda row: order.get(row["pair_id"], len(order)))
    corpus = compute_corpus(
        pairs, classes, n_bootstrap=n_bootstrap, seed=seed, use_groups=use_groups, unavailable=unavailable
    )
    unit = corpus.get("bootstrap", {}).get("unit", "pair")
    failed_ids = {f["pair_id"] for f in failures}
    return {
        "schema_version": SCHEMA_VERSION,
        "job": {
            "id": job.get("id"),
            "name": job.get("name"),
            "metadata": job.get("metadata"),
            "profile": profile_name,
            "status": job.get("status", "succeeded"),
            "created_at": job.get("created_at"),
            "finished_at": job.get("finished_at"),
            "n_pairs": len(pairs) + len(failed_ids),
            "n_failed": len(failed_ids),
        },
        "signature": make_signature(
            profile_name, profile_parts, head_sha256, prosody, n_bootstrap=n_bootstrap, seed=seed, unit=unit
        ),
        "models": models,
        "summary": summarise(corpus, pairs),
        "corpus": corpus,
        "pairs": pairs,
        "failures": failures,
    }


def headline(report: dict) -> dict:
    """The headline metrics of a report (value, CI, reason): what a dashboard plots across system versions."""
    corpus = report.get("corpus", {})
    return {
        name: {key: corpus[name].get(key) for key in ("value", "ci_low", "ci_high", "n", "reason")}
        for name in HEADLINE_METRICS
        if name in corpus
    }


def format_summary(report: dict) -> str:
    from emopres_client.summary import format_summary as summary

    return summary(report, HEADLINE_METRICS)


def head_info(head) -> dict:
    return {
        "source": head.metadata.get("source", "SER head"),
        "sha256": head.sha256(),
        "version": head.metadata.get("version", "1"),
        "classes": head.classes,
        "feature_set": head.feature_set,
        "trained_on": head.metadata.get("corpora"),  # where its weights came from, for the report page
        "trained": head.metadata.get("date"),
        "members": getattr(head, "members", None),
    }


def report_for_evaluator(
    evaluator,
    *,
    rows: list[dict],
    failures: list[dict],
    pair_order: list[str],
    job: dict,
    n_bootstrap: int,
    seed: int,
    use_groups: bool,
) -> dict:
    """The report of pairs evaluated by `evaluator` (a worker.engine.pipeline.Evaluator): CLI and service alike."""
    from worker.engine.pipeline import prosody_signature
    from worker.engine.side_reading import add_side_reading

    profile = evaluator.profile
    side_head = evaluator.side_head
    rows, normalised_per, side_unavailable = add_side_reading(rows, side_head)
    models = {**profile.models_info(), "ser_head": head_info(evaluator.head)}
    side_part = f"ser_side:{side_head.sha256()[:12] if side_head is not None else 'none'}"
    builtin = evaluator.head.metadata.get("builtin")  # which head read SER, when it is not a trained one
    head_parts = [f"ser_head:{builtin}"] if builtin else []
    if side_head is not None:
        models["ser_head_side"] = {**head_info(side_head), "normalised_per": normalised_per}
    if "group" in normalised_per.values():  # per-group statistics change the side values: part of the signature
        side_part += "@" + ",".join(f"{side}={unit}" for side, unit in normalised_per.items())
    return build_report(
        job={**job, "pair_order": pair_order},
        pairs=rows,
        failures=failures,
        classes=evaluator.head.classes,
        profile_name=evaluator.spec.name,
        profile_parts=[*head_parts, side_part, *profile.signature_parts()],
        prosody=prosody_signature(),
        head_sha256=evaluator.head.sha256(),
        models=models,
        n_bootstrap=n_bootstrap,
        seed=seed,
        use_groups=use_groups,
        unavailable={**profile.unavailable(), **side_unavailable},
    )
