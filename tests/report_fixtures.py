"""Synthetic reports built through the real report code (worker.engine.report.build_report): fast, no audio."""

from __future__ import annotations

import json

import numpy as np

from worker.engine.report import build_report

CLASSES = ["neutral", "joy", "sadness", "anger"]


def _probs(rng: np.random.Generator, pred: str, sharp: float) -> dict:
    logits = rng.normal(0, 1, len(CLASSES))
    logits[CLASSES.index(pred)] += sharp
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return {c: float(v) for c, v in zip(CLASSES, p, strict=True)}


def _side(rng, pred, sharp):
    probs = _probs(rng, pred, sharp)
    entropy = -sum(v * np.log(v) for v in probs.values() if v > 0) / np.log(len(CLASSES))
    return {
        "pred": pred,
        "probs": probs,
        "uncertainty": float(entropy),
        "duration_s": float(rng.uniform(1, 5)),
        "pause_rate": float(rng.uniform(0, 1)),
        "speech_rate": float(rng.uniform(2, 7)),
    }


def make_rows(
    n: int = 24,
    seed: int = 0,
    keep: float = 0.7,
    labels: bool = True,
    acoustic: bool = True,
    emo_sim: bool = False,
    ids: list[str] | None = None,
) -> list[dict]:
    """Per-pair report rows: the target keeps the source prediction with probability `keep`."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        gold = CLASSES[i % len(CLASSES)]
        pred_s = gold if rng.random() < 0.6 else CLASSES[rng.integers(len(CLASSES))]
        pred_t = pred_s if rng.random() < keep else CLASSES[rng.integers(len(CLASSES))]
        source, target = _side(rng, pred_s, 3.0), _side(rng, pred_t, rng.uniform(0, 4))
        target["pause_rate"] = source["pause_rate"] * 0.8 + rng.uniform(0, 0.3)
        target["speech_rate"] = source["speech_rate"] * 0.9 + rng.uniform(0, 1)
        rows.append(
            {
                "pair_id": ids[i] if ids else f"p{i:03d}",
                "label": gold if labels else None,
                "group": None,
                "source": source,
                "target": target,
                "agree": pred_s == pred_t,
                "expected_agreement": sum(source["probs"][c] * target["probs"][c] for c in CLASSES),
                "bhattacharyya": sum((source["probs"][c] * target["probs"][c]) ** 0.5 for c in CLASSES),
                "emo_sim": float(rng.uniform(0.3, 0.95)) if emo_sim else None,
                "emo_sim_utterance": float(rng.uniform(0.5, 0.99)) if emo_sim else None,
                "va_sim": None,
                "vsim": None,
                "autopcp": None,
                "acoustic_sim": float(rng.uniform(-0.2, 0.6)) if acoustic else None,
                "acoustic_sim_utterance": float(rng.uniform(-0.5, 0.5)) if acoustic else None,
                "warnings": [],
            }
        )
    return rows


UNAVAILABLE = {
    "emo_sim": "needs the paper profile (emotion2vec)",
    "emo_sim_utterance": "needs the paper profile (emotion2vec)",
    "va_sim": "needs the paper profile (wav2vec2 valence-arousal)",
    "vsim": "needs the paper profile (WavLM ECAPA-TDNN)",
    "autopcp": "needs the paper profile (AutoPCP)",
}


def make_report(
    rows: list[dict] | None = None,
    failures: list[dict] | None = None,
    job_id: str | None = "job-1",
    n_bootstrap: int = 100,
    **row_args,
) -> dict:
    rows = make_rows(**row_args) if rows is None else rows
    failures = failures or []
    return build_report(
        job={
            "id": job_id,
            "status": "succeeded",
            "created_at": "2026-01-01T00:00:00+00:00",
            "finished_at": "2026-01-01T00:01:00+00:00",
            "pair_order": [r["pair_id"] for r in rows],
        },
        pairs=rows,
        failures=failures,
        classes=CLASSES,
        profile_name="lite",
        profile_parts=["feat:egemaps-v02"],
        prosody="vad:test",
        head_sha256="0" * 64,
        models={"ser_head": {"source": "synthetic", "sha256": "0" * 64, "version": "1"}},
        n_bootstrap=n_bootstrap,
        seed=12345,
        use_groups=False,
        unavailable=UNAVAILABLE,
    )


# ------------------------------------------------------------------------------------------ a real report

_REAL: dict = {}


def real_run(shared_data, head, folder, n_pairs: int = 4) -> dict:
    """`emopres evaluate --out --plots --html` on a few real en-ja pairs (half with the emotion swapped).

    Returns {"report", "audio" ({pair_id: {"source": Path, "target": Path}}), "plots" (folder),
    "html" (file)}; run once per session.
    """
    import csv

    from cli.main import main

    if _REAL:
        return _REAL
    with open(shared_data / "pairs" / "en-ja.csv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"]
    chosen = rows[:: max(1, len(rows) // n_pairs)][:n_pairs]
    pairs_csv = folder / "pairs.csv"
    audio = {}
    with open(pairs_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pair_id", "source", "target", "label"])
        for i, row in enumerate(chosen):
            target = row["target_preserved"] if i % 2 == 0 else row["target_swapped"]
            writer.writerow([row["pair_id"], row["source"], target, row["emotion"]])
            audio[row["pair_id"]] = {"source": shared_data / row["source"], "target": shared_data / target}
    out, plots, html = folder / "report.json", folder / "plots", folder / "report.html"
    status = main(
        [
            "evaluate",
            str(pairs_csv),
            "--audio-root",
            str(shared_data),
            "--out",
            str(out),
            "--head",
            str(head),
            "--bootstrap",
            "100",
            "--jobs",
            "1",
            "--no-cache",
            "--plots",
            str(plots),
            "--html",
            str(html),
        ]
    )
    assert status == 0
    _REAL.update(report=json.loads(out.read_text()), audio=audio, plots=plots, html=html)
    return _REAL
