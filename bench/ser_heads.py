"""The first lite-head study (`python bench/ser_quality.py [--seeds 3] [--only NAME ...]`): the eGeMAPS head
(paper MLP) on RAVDESS and JVNV, mean +- sd over seeds:

  in-language   train RAVDESS actors 01-14, dev 15-17, test 18-20 (unseen speakers; the split of
                pairs/en-ja.csv)
  cross-lang    the same head tested on all of JVNV (Japanese, 6 classes, never seen)
  reverse       train on JVNV (utterance split by number % 5), test on RAVDESS test actors, 6 shared classes
  both          train RAVDESS train + JVNV train, dev both devs; test RAVDESS test and JVNV test

for variants: calm handling, balancing, per-utterance vs per-side (per-corpus) standardisation,
training-data augmentation. Results are merged into --json (default .cache/ser_quality.json).
"""

from __future__ import annotations

import time

import numpy as np
from ser_common import features, labels_for, per_group

# after ser_common, which puts the repository on sys.path
from models.ser.training import MELD_CLASSES, TrainConfig, classification_scores, train_one


def experiment(
    data: dict,
    *,
    train_sel,
    dev_sel,
    tests: dict,
    calm="neutral",
    balance="clustercentroids",
    norm="utterance",
    augment=(),
    seeds=(1, 2, 3),
    config=None,
    classes=MELD_CLASSES,
) -> dict:
    """train_sel/dev_sel/tests[name]: boolean masks over `data`. Returns per-test UA/WA mean/sd and dev."""
    config = config or TrainConfig()
    labels = labels_for(data["emotion"], calm)
    keep = labels != "-"
    classes = [c for c in classes if c in set(labels[keep & train_sel])]
    base = features(data["path"])
    # "side" = one corpus split evaluated together (a job's side); per_side z-scores each with its own stats
    side = np.array([f"{c}:{s}" for c, s in zip(data["corpus"], data["split"], strict=True)])
    if norm == "side":
        normed = per_group(base, side)
    elif norm == "speaker":
        normed = per_group(base, data["speaker"])
    else:
        normed = base
    train_idx = np.flatnonzero(train_sel & keep)
    blocks_x, blocks_y = [normed[train_idx]], [labels[train_idx]]
    for aug in augment:
        augmented = features(data["path"][train_idx], aug)
        if norm == "side":
            augmented = per_group(augmented, side[train_idx])
        elif norm == "speaker":
            augmented = per_group(augmented, data["speaker"][train_idx])
        blocks_x.append(augmented)
        blocks_y.append(labels[train_idx])
    dev_idx = np.flatnonzero(dev_sel & keep)
    x = np.concatenate(blocks_x + [normed[dev_idx]])
    y_names = np.concatenate(blocks_y + [labels[dev_idx]])
    splits = np.array(["train"] * sum(len(b) for b in blocks_y) + ["dev"] * len(dev_idx))
    mask_known = np.isin(y_names, classes)
    x, y_names, splits = x[mask_known], y_names[mask_known], splits[mask_known]
    targets = np.array([classes.index(v) for v in y_names])
    results: dict = {"dev": [], **{name: [] for name in tests}}
    kept, probs = [], {name: [] for name in tests}
    for seed in seeds:
        run = train_one(
            x,
            targets,
            splits,
            classes,
            feature_set="egemaps-v02",
            balance=balance,
            config=TrainConfig(**{**config.__dict__, "seed": seed}),
        )
        kept.append(run.fit.kept_epoch)
        results["dev"].append((run.metrics["dev"]["ua"], run.metrics["dev"]["wa"]))
        for name, sel in tests.items():
            idx = np.flatnonzero(sel & keep & np.isin(labels, classes))
            p = run.head.predict_proba(normed[idx])
            probs[name].append(p)
            pred = p.argmax(1)
            gold = np.array([classes.index(v) for v in labels[idx]])
            scores = classification_scores(gold, pred, len(classes))
            results[name].append((scores["ua"], scores["wa"]))
    summary = {
        name: {
            "ua": float(np.mean([r[0] for r in rows])),
            "ua_sd": float(np.std([r[0] for r in rows])),
            "wa": float(np.mean([r[1] for r in rows])),
            "wa_sd": float(np.std([r[1] for r in rows])),
        }
        for name, rows in results.items()
    }
    for name, sel in tests.items():  # ensemble of the seeds (mean probabilities)
        idx = np.flatnonzero(sel & keep & np.isin(labels, classes))
        gold = np.array([classes.index(v) for v in labels[idx]])
        scores = classification_scores(gold, np.mean(probs[name], axis=0).argmax(1), len(classes))
        summary[f"{name}_ens"] = {"ua": scores["ua"], "ua_sd": 0.0, "wa": scores["wa"], "wa_sd": 0.0}
    summary["kept_epochs"] = kept
    summary["classes"] = classes
    return summary


def masks(data: dict) -> dict:
    rav, jv = data["corpus"] == "ravdess", data["corpus"] == "jvnv"
    split = data["split"]
    return {
        "rav_train": rav & (split == "train"),
        "rav_dev": rav & (split == "dev"),
        "rav_test": rav & (split == "test"),
        "jv_train": jv & (split == "train"),
        "jv_dev": jv & (split == "dev"),
        "jv_test": jv & (split == "test"),
        "jv_all": jv,
    }


def study(data: dict, seeds, only=None) -> list[dict]:
    m = masks(data)
    ravdess_only = dict(
        train_sel=m["rav_train"],
        dev_sel=m["rav_dev"],
        tests={"in_lang_test": m["rav_test"], "cross_lang_jvnv": m["jv_all"]},
    )
    both = dict(
        train_sel=m["rav_train"] | m["jv_train"],
        dev_sel=m["rav_dev"] | m["jv_dev"],
        tests={"rav_test": m["rav_test"], "jvnv_test": m["jv_test"]},
    )
    reverse = dict(train_sel=m["jv_train"], dev_sel=m["jv_dev"], tests={"rav_test_6cls": m["rav_test"]})
    speed = ("speed:0.9", "speed:1.1")
    plans = {
        "rav|calm=neutral|cc|utt": dict(ravdess_only),
        "rav|calm=drop|cc|utt": dict(ravdess_only, calm="drop"),
        "rav|calm=neutral|none|utt": dict(ravdess_only, balance="none"),
        "rav|calm=neutral|cc|side": dict(ravdess_only, norm="side"),
        "rav|calm=neutral|cc|speaker": dict(ravdess_only, norm="speaker"),
        "rav|calm=neutral|cc|utt|speed": dict(ravdess_only, augment=speed),
        "rav|calm=neutral|cc|utt|speed+pitch": dict(ravdess_only, augment=speed + ("pitch:-2", "pitch:2")),
        "rav|calm=neutral|cc|utt|speed+gain": dict(ravdess_only, augment=speed + ("gain:-10", "gain:10")),
        "rav|calm=neutral|cc|side|speed": dict(ravdess_only, norm="side", augment=speed),
        "jvnv->rav|cc|utt": dict(reverse),
        "jvnv->rav|cc|side": dict(reverse, norm="side"),
        "both|calm=neutral|cc|utt": dict(both),
        "both|calm=neutral|cc|side": dict(both, norm="side"),
        "both|calm=neutral|cc|utt|speed": dict(both, augment=speed),
    }
    out = []
    for name, plan in plans.items():
        if only and name not in only:
            continue
        started = time.monotonic()
        summary = experiment(data, seeds=seeds, **plan)
        summary["name"] = name
        summary["seconds"] = round(time.monotonic() - started, 1)
        out.append(summary)
        cells = "  ".join(
            f"{k} UA {v['ua']:.3f}±{v['ua_sd']:.3f} WA {v['wa']:.3f}" for k, v in summary.items() if isinstance(v, dict)
        )
        print(f"{name:42s} {cells}  epochs {summary['kept_epochs']}  ({summary['seconds']} s)", flush=True)
    return out
