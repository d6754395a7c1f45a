"""Comparing two reports that share pair ids (a new system vs a baseline): ``GET /v1/jobs/{id}/compare/{baseline}``.

A thin layer over :func:`worker.engine.corpus.compare_runs` (paired bootstrap of every corpus metric
over the shared pairs): it takes two report dicts, names the sides ``baseline`` and ``job``
(diff = job - baseline), uses the job's bootstrap settings unless told otherwise, and warns
when the two reports were not produced with the same models (their signatures differ in more
than the emopres version).
"""

from __future__ import annotations

from core.catalogue import BY_NAME, METRICS, NEEDS_PAPER
from worker.engine.corpus import RUN, compare_runs

__all__ = ["compare_reports"]

_RENAME = {"a": "baseline", "b": "job"}
NAMES = ("the baseline", "this run")  # how the reasons name the two reports
_NEEDS_PAPER_PREFIX = NEEDS_PAPER.split("{", 1)[0]


def _missing(report: dict) -> dict[str, str]:
    """Why each metric the report could not compute is missing, in words a comparison can name the run by: a metric
    its profile has no model for says which profile it ran ("{run} ran the lite profile, which has no AutoPCP")."""
    profile = (report.get("job") or {}).get("profile")
    out = {}
    for name in METRICS:
        entry = (report.get("corpus") or {}).get(name) or {}
        reason = entry.get("reason")
        if entry.get("value") is None and entry.get("n") == 0 and reason:
            if profile and str(reason).startswith(_NEEDS_PAPER_PREFIX):
                reason = f"{RUN} ran the {profile} profile, which has no {BY_NAME[name].model}"
            out[name] = str(reason)
    return out


def _signature_parts(signature: str | None) -> dict[str, str]:
    parts = {}
    for part in (signature or "").split("|"):
        key, _, value = part.partition(":")
        parts[key] = value
    return parts


def compare_reports(
    report: dict, baseline: dict, *, n_bootstrap: int | None = None, seed: int | None = None, metrics=METRICS
) -> dict:
    """Paired comparison of ``report`` against ``baseline`` (both report dicts, schema_version 1)."""
    boot = (report.get("corpus") or {}).get("bootstrap") or {}
    n_bootstrap = int(boot.get("n_resamples", 1000) if n_bootstrap is None else n_bootstrap)
    seed = int(boot.get("seed", 12345) if seed is None else seed)
    use_groups = boot.get("unit") == "group"
    classes = list(((report.get("corpus") or {}).get("ser") or {}).get("classes") or [])
    for extra in ((baseline.get("corpus") or {}).get("ser") or {}).get("classes") or []:
        if extra not in classes:
            classes.append(extra)

    result = compare_runs(
        baseline.get("pairs") or [],
        report.get("pairs") or [],
        classes,
        metrics,
        n_bootstrap=n_bootstrap,
        seed=seed,
        use_groups=use_groups,
        unavailable=_missing(baseline),
        unavailable_b=_missing(report),
        names=NAMES,
    )
    out = {
        "job_id": (report.get("job") or {}).get("id"),
        "baseline_id": (baseline.get("job") or {}).get("id"),
        "diff": "job - baseline",
        "n_shared": result["n_shared"],
        "n_only_job": result["n_only_b"],
        "n_only_baseline": result["n_only_a"],
        "metrics": {name: {_RENAME.get(k, k): v for k, v in result[name].items()} for name in metrics},
        "flipped": result["flipped"],
        "bootstrap": result["bootstrap"],
        "signatures": {"job": report.get("signature"), "baseline": baseline.get("signature")},
        "warnings": list(result.get("warnings") or []),
    }
    mine, theirs = _signature_parts(report.get("signature")), _signature_parts(baseline.get("signature"))
    differing = sorted(
        k
        for k in set(mine) | set(theirs)
        if k not in ("emopres", "bs", "seed", "unit") and mine.get(k) != theirs.get(k)
    )
    if differing:
        out["warnings"].append(
            "the two reports were made with different settings or models ("
            + ", ".join(differing)
            + "): differences mix the systems with the evaluators"
        )
    if result["n_shared"] == 0:
        out["warnings"].append("the two jobs share no pair ids: nothing to compare")
    return out
