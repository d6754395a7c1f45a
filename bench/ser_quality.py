"""Quality study for the lite SER head (eGeMAPS -> paper MLP) on ../shared/data.

Measures, over several seeds (mean +- sd):
  in-language   train RAVDESS actors 01-14, dev 15-17, test 18-20 (unseen speakers; the split of
                pairs/en-ja.csv)
  cross-lang    the same head tested on all of JVNV (Japanese, 6 classes, never seen)
  reverse       train on JVNV (utterance split by number % 5), test on RAVDESS test actors, 6 shared classes
  both          train RAVDESS train + JVNV train, dev both devs; test RAVDESS test and JVNV test
for variants: calm handling, balancing, per-utterance vs per-side (per-corpus) standardisation,
training-data augmentation.

    python bench/ser_quality.py [--seeds 3] [--only NAME ...]
    python bench/ser_quality.py --ship --ensemble 5 --speed-perturb 0.9 1.1   # writes models/artifacts/ser_lite

Features are cached under .cache/features (extracted once per file and augmentation).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from dataclasses import replace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.ser.training import (MELD_CLASSES, TrainConfig, classification_scores, extract_features,  # noqa: E402
                                 speed_perturb, train_one)

DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / ".cache" / "features"
RAVDESS_SPLIT = {"train": range(1, 15), "dev": range(15, 18), "test": range(18, 21)}


def ravdess_split(speaker: str) -> str:
    return next(name for name, members in RAVDESS_SPLIT.items() if int(speaker) in members)


def jvnv_split(number: str) -> str:
    return {0: "train", 1: "train", 2: "train", 3: "dev", 4: "test"}[int(number) % 5]


# EmoDB (5 speakers here): 03 (m) and 08 (f) are test speakers no choice looks at; 09, 10, 11 train; no dev speaker.
EMODB_SPLIT = {"03": "test", "08": "test", "09": "train", "10": "train", "11": "train"}


def emodb_split(speaker: str) -> str:
    return EMODB_SPLIT[speaker]


def ased_split(speaker: str) -> str:
    """ASED's 65 speakers: number % 5 == 0 test (13 speakers), == 1 dev (13), the other 39 train."""
    return {0: "test", 1: "dev"}.get(int(speaker) % 5, "train")


SPLIT_RULES = {"ravdess": lambda row: ravdess_split(row["speaker"]), "jvnv": lambda row: jvnv_split(row["number"]),
               "emodb": lambda row: emodb_split(row["speaker"]), "ased": lambda row: ased_split(row["speaker"])}
SPLIT_RULE_TEXT = ("RAVDESS: actors 01-14 train, 15-17 dev, 18-20 test (the split of pairs/en-ja.csv); "
                   "JVNV (one speaker, F2): utterance number % 5 in {0,1,2} train, 3 dev, 4 test; "
                   "EmoDB: speakers 09, 10, 11 train, 03 and 08 test (no dev speaker); "
                   "ASED: speaker number % 5 == 0 test (13 speakers), == 1 dev (13), others train (39)")
CORPORA = ("ravdess", "jvnv", "emodb", "ased")


def load_all(corpora=("ravdess", "jvnv")) -> dict:
    rows = []
    for corpus in corpora:
        with open(DATA / corpus / "manifest.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                rows.append({"path": DATA / corpus / row["path"], "rel": f"{corpus}/{row['path']}", "corpus": corpus,
                             "speaker": f"{corpus}:{row['speaker']}", "emotion": row["emotion"],
                             "split": SPLIT_RULES[corpus](row)})
    return {key: np.array([r[key] for r in rows], dtype=object if key == "path" else None)
            for key in ("path", "rel", "corpus", "speaker", "emotion", "split")}


# ---------------------------------------------------------------- augmentation (training data only)

class Augmented:
    """Wraps an extractor: transform the wave first (its own cache key)."""

    def __init__(self, base, name: str):
        self.base, self.name = base, name
        self.feature_set = base.feature_set
        self.signature = f"{base.signature}|aug={name}"

    def transform(self, wave: np.ndarray) -> np.ndarray:
        kind, value = self.name.split(":")
        value = float(value)
        if kind == "speed":       # Kaldi-style speed perturbation: tempo, pitch and formants together
            return speed_perturb(wave, value)
        if kind == "pitch":       # semitones, tempo kept
            import librosa

            return librosa.effects.pitch_shift(wave, sr=16000, n_steps=value).astype(np.float32)
        if kind == "gain":        # dB
            return (wave * 10 ** (value / 20)).astype(np.float32)
        if kind == "noise":       # white noise at SNR dB, fixed seed per length
            rng = np.random.default_rng(len(wave))
            power = np.mean(wave ** 2) / 10 ** (value / 10)
            return (wave + rng.normal(0, np.sqrt(power), len(wave))).astype(np.float32)
        raise ValueError(self.name)

    def __call__(self, waves):
        return self.base([self.transform(w) for w in waves])


_EXTRACTOR = None


def extractor():
    global _EXTRACTOR
    if _EXTRACTOR is None:
        from models.ser.training import EgemapsExtractor

        _EXTRACTOR = EgemapsExtractor()
    return _EXTRACTOR


def features(paths, augmentation: str | None = None) -> np.ndarray:
    ex = extractor() if augmentation is None else Augmented(extractor(), augmentation)
    matrix, _ = extract_features(list(paths), ex, CACHE)
    return matrix


# ---------------------------------------------------------------- normalisation

def per_group(matrix: np.ndarray, groups: np.ndarray) -> np.ndarray:
    out = np.empty_like(matrix)
    for group in np.unique(groups):
        mask = groups == group
        mean, std = matrix[mask].mean(0), matrix[mask].std(0)
        out[mask] = (matrix[mask] - mean) / np.where(std > 1e-8, std, 1.0)
    return out


# ---------------------------------------------------------------- one experiment

def labels_for(emotions: np.ndarray, calm: str) -> np.ndarray:
    """MELD labels: RAVDESS calm merged into neutral (or dropped); EmoDB boredom (no MELD counterpart) dropped."""
    emotions = np.where(emotions == "boredom", "-", emotions)
    if calm == "neutral":
        return np.where(emotions == "calm", "neutral", emotions)
    if calm == "drop":
        return np.where(emotions == "calm", "-", emotions)
    raise ValueError(calm)


def experiment(data: dict, *, train_sel, dev_sel, tests: dict, calm="neutral", balance="clustercentroids",
               norm="utterance", augment=(), seeds=(1, 2, 3), config=None, classes=MELD_CLASSES) -> dict:
    """train_sel/dev_sel/tests[name]: boolean masks over `data`. Returns per-test UA/WA mean/sd and dev."""
    config = config or TrainConfig()
    labels = labels_for(data["emotion"], calm)
    keep = labels != "-"
    classes = [c for c in classes if c in set(labels[keep & train_sel])]
    base = features(data["path"])
    # "side" = one corpus split evaluated together (a job's side); per_side z-scores each with its own stats
    side = np.array([f"{c}:{s}" for c, s in zip(data["corpus"], data["split"])])
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
        run = train_one(x, targets, splits, classes, feature_set="egemaps-v02", balance=balance,
                        config=TrainConfig(**{**config.__dict__, "seed": seed}))
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
    summary = {name: {"ua": float(np.mean([r[0] for r in rows])), "ua_sd": float(np.std([r[0] for r in rows])),
                      "wa": float(np.mean([r[1] for r in rows])), "wa_sd": float(np.std([r[1] for r in rows]))}
               for name, rows in results.items()}
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
    return {"rav_train": rav & (split == "train"), "rav_dev": rav & (split == "dev"), "rav_test": rav & (split == "test"),
            "jv_train": jv & (split == "train"), "jv_dev": jv & (split == "dev"), "jv_test": jv & (split == "test"),
            "jv_all": jv}


def study(data: dict, seeds, only=None) -> list[dict]:
    m = masks(data)
    ravdess_only = dict(train_sel=m["rav_train"], dev_sel=m["rav_dev"],
                        tests={"in_lang_test": m["rav_test"], "cross_lang_jvnv": m["jv_all"]})
    both = dict(train_sel=m["rav_train"] | m["jv_train"], dev_sel=m["rav_dev"] | m["jv_dev"],
                tests={"rav_test": m["rav_test"], "jvnv_test": m["jv_test"]})
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
        cells = "  ".join(f"{k} UA {v['ua']:.3f}±{v['ua_sd']:.3f} WA {v['wa']:.3f}" for k, v in summary.items()
                          if isinstance(v, dict))
        print(f"{name:42s} {cells}  epochs {summary['kept_epochs']}  ({summary['seconds']} s)", flush=True)
    return out


# ---------------------------------------------------------------- pairs with known preservation (all corpora)

PAIR_NAMES = {"jvnv": "en-ja", "emodb": "en-de", "ased": "en-am"}
PAIR_COLUMNS = ("pair_id", "source", "target_preserved", "target_swapped", "emotion", "swapped_emotion", "speaker",
                "split")
PAIRS_CACHE = ROOT / ".cache" / "pairs"


def build_pairs(data: dict, target: str, seed: int = 20261201, voices: str = "random") -> list[dict]:
    """English RAVDESS sources paired with a `target`-corpus utterance of the same emotion (preserved) and of a
    different one (swapped), as pairs/en-ja.csv is built; split by English speaker (01-14 / 15-17 / 18-20).

    Unlike en-ja.csv, targets follow the target corpus's own split: test sources get targets from its test
    speakers/utterances only, train and dev sources from the rest, so the test pairs are unseen on both sides
    and a choice made on dev pairs never looks at a test target. Sources: every RAVDESS utterance (calm excluded:
    no MELD counterpart) whose emotion the target's pool has. Each row keeps the data indexes (_s, _p, _w).

    voices="random": each target from any speaker of the pool (pairs/en-de.csv's way).
    voices="one-per-speaker": all targets of one source speaker from one target speaker (assigned in turn), as a
    system speaks each speaker's translations in one voice; en-ja.csv is that way too (JVNV has one speaker here).
    """
    rng = np.random.default_rng(seed + CORPORA.index(target) + (0 if voices == "random" else 1000))
    labels = labels_for(data["emotion"], "drop")
    is_target = data["corpus"] == target
    parts = {"test": is_target & (data["split"] == "test"), "rest": is_target & (data["split"] != "test")}
    voice_of = {}
    if voices == "one-per-speaker":
        for side, part in parts.items():
            sources = (data["corpus"] == "ravdess") & ((data["split"] == "test") == (side == "test"))
            pool_speakers = sorted(set(data["speaker"][part]))
            for k, speaker in enumerate(sorted(set(data["speaker"][sources]))):
                voice_of[speaker] = pool_speakers[k % len(pool_speakers)]
    elif voices != "random":
        raise ValueError(f"voices: random or one-per-speaker, not {voices!r}")
    rows = []
    for i in np.flatnonzero((data["corpus"] == "ravdess") & (labels != "-")):
        part = parts["test" if data["split"][i] == "test" else "rest"]
        if voice_of:
            part = part & (data["speaker"] == voice_of[data["speaker"][i]])
        pool = {e: np.flatnonzero(part & (labels == e)) for e in sorted(set(labels[part])) if e != "-"}
        emotion = labels[i]
        if emotion not in pool:
            continue
        other = str(rng.choice([e for e in pool if e != emotion]))
        preserved, swapped = int(rng.choice(pool[emotion])), int(rng.choice(pool[other]))
        rows.append({"pair_id": f"{PAIR_NAMES[target].replace('-', '')}-{len(rows):04d}", "source": data["rel"][i],
                     "target_preserved": data["rel"][preserved], "target_swapped": data["rel"][swapped],
                     "emotion": emotion, "swapped_emotion": other, "speaker": data["speaker"][i].split(":")[1],
                     "split": data["split"][i], "_s": int(i), "_p": preserved, "_w": swapped})
    return rows


def write_pairs(rows: list[dict], path: Path) -> Path:
    """The pairs as a path-only CSV shaped like pairs/en-ja.csv (paths relative to ../shared/data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PAIR_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


# ---------------------------------------------------------------- leave-one-corpus-out study

def pair_expected_agreement(p_source: np.ndarray, p_target: np.ndarray) -> np.ndarray:
    """The report's per-pair expected agreement (core.metrics.expected_agreement), row by row."""
    from core.metrics import expected_agreement

    return np.array([expected_agreement(s, t) for s, t in zip(p_source, p_target)])


def pair_bhattacharyya(p_source: np.ndarray, p_target: np.ndarray) -> np.ndarray:
    """The report's per-pair Bhattacharyya coefficient (core.metrics.bhattacharyya), row by row."""
    from core.metrics import bhattacharyya

    return np.array([bhattacharyya(s, t) for s, t in zip(p_source, p_target)])


def separation(p_source, p_preserved, p_swapped, *, n_bootstrap: int = 2000, seed: int = 1) -> dict:
    """Preserving vs swapping system over the same sources, for EPR (argmax agreement), expected agreement and the
    Bhattacharyya coefficient:
    each system's value, the paired difference (preserved - swapped) with paired-bootstrap 95% CI, z and p."""
    from core.bootstrap import paired_bootstrap
    from worker.research.validation import z_from_interval

    per_pair = {"epr": (p_source.argmax(1) == p_preserved.argmax(1), p_source.argmax(1) == p_swapped.argmax(1)),
                "expected_agreement": (pair_expected_agreement(p_source, p_preserved),
                                       pair_expected_agreement(p_source, p_swapped)),
                "bhattacharyya": (pair_bhattacharyya(p_source, p_preserved), pair_bhattacharyya(p_source, p_swapped))}
    out = {"n": int(len(p_source))}
    for name, (kept, swapped) in per_pair.items():
        kept, swapped = np.asarray(kept, np.float64), np.asarray(swapped, np.float64)
        res = paired_bootstrap(lambda idx: swapped[idx].mean(), lambda idx: kept[idx].mean(), len(kept),
                               n_resamples=n_bootstrap, seed=seed)
        out[name] = {"preserved": float(kept.mean()), "swapped": float(swapped.mean()), "diff": res["diff"],
                     "ci_low": res["ci_low"], "ci_high": res["ci_high"], "p_value": res["p_value"],
                     "z": z_from_interval(res["diff"], res["ci_low"], res["ci_high"])}
    return out


# A variant: balance (clustercentroids / none), norm ("utterance": the head's own scaler, per utterance;
# "side": every corpus split z-scored with its own statistics in training, every evaluated side at inference),
# corpus_balance (repeat the smaller corpora's training rows up to the largest corpus's count; copies never scored),
# ensemble (networks averaged), architecture (paper / nkululeko).
LOCO_VARIANTS = {
    "cc": dict(balance="clustercentroids"),
    "none": dict(balance="none"),
    "corpus-bal": dict(balance="none", corpus_balance=True),
    "cc|side": dict(balance="clustercentroids", norm="side"),
    "none|side": dict(balance="none", norm="side"),
    "none|speed": dict(balance="none", speed=(0.9, 1.1)),
    "corpus-bal|side": dict(balance="none", corpus_balance=True, norm="side"),
    "nkululeko|cc": dict(balance="clustercentroids", architecture="nkululeko"),
    # per-speaker statistics at inference (worker/engine/side_reading.py with a group column): each speaker of the
    # left-out corpus z-scored on its own; in pairs, each source speaker's sources and its targets
    "none|side|speaker": dict(balance="none", norm="side", groups="speaker"),
    # also trained that way: each training speaker (per split) z-scored on its own
    "none|speaker": dict(balance="none", norm="speaker", groups="speaker"),
    # the side head before 2026-12-03 (fourth session; sha 3c122d66) exactly: five networks averaged (the rows
    # above are single networks)
    "none|side|speaker|ens5": dict(balance="none", norm="side", groups="speaker", ensemble=5),
    # smaller networks, same reading (2026-12-03, fourth session): no hidden layer (multinomial logistic
    # regression on the standardised features), with weight decay, with ClusterCentroids, trained per speaker,
    # read per side; one hidden layer of 64 or 128
    "linear|side|speaker": dict(balance="none", norm="side", groups="speaker", hidden=()),
    "linear|side|speaker|ens5": dict(balance="none", norm="side", groups="speaker", hidden=(), ensemble=5),
    "linear|side|speaker|wd1e-3": dict(balance="none", norm="side", groups="speaker", hidden=(), weight_decay=1e-3),
    "linear|side|speaker|wd1e-2": dict(balance="none", norm="side", groups="speaker", hidden=(), weight_decay=1e-2),
    "linear|cc|side|speaker": dict(balance="clustercentroids", norm="side", groups="speaker", hidden=()),
    "linear|speaker": dict(balance="none", norm="speaker", groups="speaker", hidden=()),
    "linear|side": dict(balance="none", norm="side", hidden=()),
    "linear": dict(balance="none", hidden=()),
    "mlp64|side|speaker": dict(balance="none", norm="side", groups="speaker", hidden=(64,)),
    "mlp128|side|speaker": dict(balance="none", norm="side", groups="speaker", hidden=(128,)),
}


# eGeMAPSv02 functionals by group (opensmile's feature names), for the feature-group ablation ("drop" in a variant)
EGEMAPS_GROUPS = {
    "f0": lambda n: n.startswith("F0semitone"),
    "loudness": lambda n: n.startswith("loudness_") or n == "equivalentSoundLevel_dBp",
    "flux": lambda n: n.startswith("spectralFlux"),
    "mfcc": lambda n: n.startswith("mfcc"),
    "voicequality": lambda n: n.split("_")[0] in ("jitterLocal", "shimmerLocaldB", "HNRdBACF", "logRelF0-H1-H2",
                                                  "logRelF0-H1-A3"),
    "formants": lambda n: n[:2] in ("F1", "F2", "F3"),
    "balance": lambda n: n.startswith(("alphaRatio", "hammarberg", "slope")),
    "temporal": lambda n: n.endswith(("PerSec", "SegmentLengthSec", "SegmentLength")),
}
LOCO_VARIANTS.update({f"linear|side|speaker|-{group}": dict(LOCO_VARIANTS["linear|side|speaker"], drop=group)
                      for group in EGEMAPS_GROUPS})


def kept_features(drop: str | None) -> np.ndarray:
    """Column mask over the 88 eGeMAPSv02 functionals without the group `drop` (None: all)."""
    import opensmile

    names = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals).feature_names
    if drop is None:
        return np.ones(len(names), bool)
    return np.array([not EGEMAPS_GROUPS[drop](name) for name in names])


# The study's training recipe: the paper's network, dropout and epoch rule, with batches of 8 and a 4x learning rate
# (linear scaling) instead of batch 2: about 4x faster on this shared 2-core machine, so that every variant
# could be measured on every fold. The shipped head is trained with the same recipe (recorded in head.json).
STUDY_CONFIG = TrainConfig(batch_size=8, learning_rate=4e-4)


def speed_features(data: dict, index: np.ndarray, factor: float) -> np.ndarray:
    """eGeMAPS functionals of speed-perturbed copies of the files `index` (cached like the originals)."""
    from models.ser.features import EgemapsExtractor, SpeedPerturbed

    return extract_features(list(data["path"][index]), SpeedPerturbed(EgemapsExtractor(), factor), CACHE)[0]


def variant_config(config: TrainConfig, variant: dict, seed: int) -> TrainConfig:
    """The training recipe of one variant: `config` with the variant's network and seed."""
    return replace(config, seed=seed, ensemble=variant.get("ensemble", 1), architecture=variant.get("architecture", "paper"),
                   speed_perturb=tuple(variant.get("speed", ())),
                   **{key: variant[key] for key in ("hidden", "weight_decay", "dropout") if key in variant})


def train_variant(data: dict, base: np.ndarray, labels: np.ndarray, train_sel: np.ndarray, dev_sel: np.ndarray,
                  variant: dict, seed: int, config: TrainConfig | None = None):
    """A head trained on train_sel (dev_sel picks the epoch) with one variant's choices."""
    config = config or STUDY_CONFIG
    train_idx = np.flatnonzero(train_sel & (labels != "-"))
    dev_idx = np.flatnonzero(dev_sel & (labels != "-"))
    rows, copies = [train_idx], [np.zeros(len(train_idx), bool)]
    if variant.get("corpus_balance"):
        corpora, counts = np.unique(data["corpus"][train_idx], return_counts=True)
        rng = np.random.default_rng(seed)
        for corpus, count in zip(corpora, counts):
            members = train_idx[data["corpus"][train_idx] == corpus]
            extra = rng.choice(members, counts.max() - count, replace=True)
            rows.append(extra)
            copies.append(np.ones(len(extra), bool))
    rows.append(dev_idx)
    copies.append(np.zeros(len(dev_idx), bool))
    index, augmented = np.concatenate(rows), np.concatenate(copies)
    x = base[index]
    speed = tuple(variant.get("speed", ()))
    if speed:  # speed-perturbed copies of the training rows, placed before the dev rows; never scored
        copies_x = [speed_features(data, train_idx, factor) for factor in speed]
        n_train = len(index) - len(dev_idx)
        x = np.concatenate([x[:n_train], *copies_x, x[n_train:]])
        index = np.concatenate([index[:n_train], *[train_idx] * len(speed), index[n_train:]])
        augmented = np.concatenate([augmented[:n_train], np.ones(len(train_idx) * len(speed), bool),
                                    augmented[n_train:]])
    splits = np.array(["train"] * (len(index) - len(dev_idx)) + ["dev"] * len(dev_idx))
    classes = [c for c in MELD_CLASSES if c in set(labels[train_idx])]
    targets = np.array([classes.index(v) for v in labels[index]])
    unit = data["speaker"] if variant.get("norm") == "speaker" else data["corpus"]
    sides = np.array([f"{u}:{s}" for u, s in zip(unit[index], data["split"][index])])
    run = train_one(x, targets, splits, classes, feature_set="egemaps-v02",
                    balance=variant.get("balance", "clustercentroids"),
                    config=variant_config(config, variant, seed),
                    normalization="per_side" if variant.get("norm") in ("side", "speaker") else "per_utterance",
                    sides=sides, augmented=augmented,
                    metadata={"corpus_balance": bool(variant.get("corpus_balance"))})
    return run


def side_probs(head, base: np.ndarray, index: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Probabilities of the utterances `index`, evaluated together as one side (per_side heads use their stats),
    or, with `groups`, each group's distinct utterances together (the side reading with a group column)."""
    if groups is None or head.normalization == "per_utterance":
        return head.predict_proba_side(base[index])
    probs = np.empty((len(index), len(head.classes)), np.float32)
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        unique, inverse = np.unique(index[rows], return_inverse=True)
        probs[rows] = head.predict_proba_side(base[unique])[inverse.ravel()]
    return probs


def ua_of(head, base, labels, index, groups=None) -> float:
    keep = np.isin(labels[index], head.classes)
    index, groups = index[keep], (None if groups is None else groups[keep])
    gold = np.array([head.classes.index(v) for v in labels[index]])
    return classification_scores(gold, side_probs(head, base, index, groups).argmax(1), len(head.classes))["ua"]


def pair_separation(head, base, pairs: list[dict], groups: np.ndarray | None = None, **kwargs) -> dict:
    """`groups`: one per pair (its source's speaker), the same for its three utterances, or None (whole sides)."""
    source = side_probs(head, base, np.array([r["_s"] for r in pairs]), groups)
    preserved = side_probs(head, base, np.array([r["_p"] for r in pairs]), groups)
    swapped = side_probs(head, base, np.array([r["_w"] for r in pairs]), groups)
    return separation(source, preserved, swapped, **kwargs)


PAIR_VOICES = {"": "random", "+1voice": "one-per-speaker"}  # score-key suffix -> build_pairs voices


def loco(data: dict, variant_names, seeds=(1,), n_bootstrap: int = 2000, log=print, config=None) -> dict:
    """For every variant and corpus C: train on the other corpora (their train splits; their dev splits pick the
    epoch), then measure on C:
      select  UA on C's non-test part, and the separation on dev-source pairs whose targets are C's non-test part
              (what model choices may look at)
      report  UA on C's test part, and the separation on test-source pairs whose targets are C's test part
              (what no choice looks at)
    plus the head trained on all four corpora, scored on each corpus's test part and each pair set's test pairs."""
    all_features = features(data["path"])
    labels = labels_for(data["emotion"], "neutral")
    present = [c for c in CORPORA if np.any(data["corpus"] == c)]
    pairs = {(c, suffix): build_pairs(data, c, voices=voices) for c in PAIR_NAMES if c in present
             for suffix, voices in PAIR_VOICES.items()}
    out = {}
    for name in variant_names:
        variant = LOCO_VARIANTS[name]
        base = all_features[:, kept_features(variant.get("drop"))]
        # an ensemble of k networks with seed s trains seeds s..s+k-1: the n-th ensemble starts at 1 + (n-1)k, so
        # that no two ensembles share a network
        variant_seeds = tuple(1 + (seed - 1) * variant.get("ensemble", 1) for seed in seeds)
        by_speaker = variant.get("groups") == "speaker"
        result = {"variant": variant, "folds": {}}
        for held in (*present, "all"):
            started = time.monotonic()
            others = data["corpus"] != held
            fold = {}
            for seed in variant_seeds:
                run = train_variant(data, base, labels, others & (data["split"] == "train"),
                                    others & (data["split"] == "dev"), variant, seed, config)
                head = run.head
                scores = {"dev_ua": run.metrics["dev"]["ua"], "kept_epoch": run.fit.kept_epoch}
                targets = [held] if held != "all" else present
                for corpus in targets:
                    is_c = data["corpus"] == corpus
                    for part, mask in (("test", data["split"] == "test"), ("select", data["split"] != "test")):
                        if part == "select" and held == "all":
                            continue
                        index = np.flatnonzero(is_c & mask)
                        scores[f"{corpus}/{part}_ua"] = ua_of(head, base, labels, index,
                                                              data["speaker"][index] if by_speaker else None)
                    for suffix in PAIR_VOICES if corpus in PAIR_NAMES else ():
                        for part, split in (("test", "test"), ("select", "dev")):
                            if part == "select" and held == "all":
                                continue
                            chosen = [r for r in pairs[(corpus, suffix)] if r["split"] == split]
                            groups = np.array([data["speaker"][r["_s"]] for r in chosen]) if by_speaker else None
                            scores[f"{PAIR_NAMES[corpus]}{suffix}/{part}"] = pair_separation(
                                head, base, chosen, groups, n_bootstrap=n_bootstrap)
                fold[seed] = scores
            result["folds"][held] = fold
            log(f"{name:18s} held={held:8s} {time.monotonic() - started:6.1f} s  " + summarise(fold))
        out[name] = result
    return out


def summarise(fold: dict) -> str:
    cells = []
    for key, value in next(iter(fold.values())).items():
        if key.endswith("_ua") and key != "dev_ua":
            cells.append(f"{key} {np.mean([f[key] for f in fold.values()]):.3f}")
        elif isinstance(value, dict):
            cells.append(f"{key} EPR z {np.mean([f[key]['epr']['z'] for f in fold.values()]):.1f} "
                         f"EA z {np.mean([f[key]['expected_agreement']['z'] for f in fold.values()]):.1f}")
    return "  ".join(cells)


SHIP_SPLIT_RULE = ("RAVDESS: actors 01-14 train, 15-17 dev, 18-20 test (the split of pairs/en-ja.csv); "
                   "JVNV (one speaker, F2): utterance number % 5 in {0,1,2} train, 3 dev, 4 test")


def write_ship_manifest(data: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "speaker", "emotion", "split", "corpus"])
        for rel, speaker, emotion, split, corpus in zip(data["rel"], data["speaker"], data["emotion"], data["split"],
                                                        data["corpus"]):
            writer.writerow([rel, speaker, emotion, split, corpus])
    return path


def portable_paths(out: Path) -> None:
    """Replace this machine's manifest path in head.json / report.json by how to regenerate it."""
    for name in ("head.json", "report.json"):
        meta = json.loads((out / name).read_text())
        for info in meta.get("split", {}).values():
            info["manifest"] = ".cache/ser_lite/manifest.csv, written by bench/ser_quality.py --ship"
        (out / name).write_text(json.dumps(meta, indent=2, sort_keys=True))


def ship(data: dict, seeds, out: Path, ensemble: int = 1, speed: tuple[float, ...] = ()) -> dict:
    """Train the shipped lite head on both corpora and write it to `out`: one network per seed, the seed
    kept by dev UA; or, with `ensemble` > 1, one head averaging networks from seeds 1..ensemble."""
    import shutil
    import tempfile

    from models.ser.head import SerHead
    from models.ser.training import load_manifest, train_ser

    manifest = write_ship_manifest(data, ROOT / ".cache" / "ser_lite" / "manifest.csv")
    dataset = load_manifest(manifest, DATA, label_map={"calm": "neutral"})
    best = None
    with tempfile.TemporaryDirectory(prefix="ser-lite-") as tmp:
        for seed in seeds:
            folder = Path(tmp) / f"seed{seed}"
            report = train_ser(dataset, folder, features="egemaps", balance="both", classes=MELD_CLASSES,
                               config=TrainConfig(seed=seed, ensemble=ensemble, speed_perturb=speed), cache_dir=CACHE, log=None,
                               extra_metadata={"source": "bench/ser_quality.py --ship", "split_rule": SHIP_SPLIT_RULE,
                                               "label_map": {"calm": "neutral"}, "seed_selection":
                                               f"seeds {list(seeds)}, kept by dev UA" if ensemble == 1 else
                                               f"ensemble of {ensemble} networks, seeds 1-{ensemble}"})
            dev_ua = report["runs"][report["selected_balance"]]["metrics"]["dev"]["ua"]
            print(f"seed {seed}: balance={report['selected_balance']} dev UA {dev_ua:.4f}\n{report['table2']}", flush=True)
            if best is None or dev_ua > best[0]:
                best = (dev_ua, seed, folder, report)
        _, seed, folder, report = best
        if out.exists():
            for item in out.iterdir():
                if item.name != "MODEL_CARD.md":
                    item.unlink()
        out.mkdir(parents=True, exist_ok=True)
        for item in folder.iterdir():
            shutil.copy2(item, out / item.name)
    portable_paths(out)
    head = SerHead.load(out)
    features_all = features(data["path"])
    labels = labels_for(data["emotion"], "neutral")
    per_corpus = {}
    for corpus in ("ravdess", "jvnv"):
        for split in ("train", "dev", "test"):
            idx = np.flatnonzero((data["corpus"] == corpus) & (data["split"] == split))
            gold = np.array([head.classes.index(v) for v in labels[idx]])
            scores = classification_scores(gold, head.predict_proba(features_all[idx]).argmax(1), len(head.classes))
            per_corpus[f"{corpus}/{split}"] = {k: scores[k] for k in ("ua", "wa", "n")}
    summary = {"seed": seed, "balance": report["selected_balance"], "sha256": head.sha256(), "per_corpus": per_corpus,
               "table2": report["table2"]}
    (out / "per_corpus_scores.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


def seed_mean(fold: dict) -> dict:
    """One fold's scores averaged over its seeds (numbers, and the numbers inside separation dicts)."""
    seeds = list(fold.values())

    def mean(values):
        first = values[0]
        if isinstance(first, dict):
            return {k: mean([v[k] for v in values]) for k in first}
        if isinstance(first, bool) or not isinstance(first, (int, float)) or len(set(values)) == 1:
            return first  # flags, text and counts shared by every seed stay as they are
        return float(np.mean(values))

    return {key: mean([s[key] for s in seeds]) for key in seeds[0]}


def loco_markdown(results: dict, part: str) -> str:
    """One row per variant and left-out corpus: UA on it, and EPR / expected-agreement (EA) / Bhattacharyya (BC) z
    of its pairs with random target voices and with one target voice per source speaker (each the mean over the
    fold's seeds; "-" where a result predates BC). part "select" (the data choices looked at) or "test" (the data
    none looked at)."""
    lines = ["| variant | left out | UA | pairs | EPR pres / swap | EPR z | EA pres / swap | EA z | BC z | "
             "one voice: EPR pres / swap | EPR z | EA z | BC z |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        name = name.removeprefix("loco:")
        for held, fold in result["folds"].items():
            if held == "all":
                continue
            scores = seed_mean(fold)
            pair_name = PAIR_NAMES.get(held)
            sep = scores.get(f"{pair_name}/{part}") if pair_name else None
            one_voice = scores.get(f"{pair_name}+1voice/{part}") if pair_name else None
            cells = [name.replace("|", "\\|"), held, f"{scores[f'{held}/{part}_ua']:.3f}"]
            if sep:
                cells += [f"{pair_name} ({sep['n']})",
                          f"{sep['epr']['preserved']:.3f} / {sep['epr']['swapped']:.3f}", f"{sep['epr']['z']:.1f}",
                          f"{sep['expected_agreement']['preserved']:.3f} / {sep['expected_agreement']['swapped']:.3f}",
                          f"{sep['expected_agreement']['z']:.1f}", _z(sep, "bhattacharyya")]
            else:
                cells += ["-"] * 6
            if one_voice:
                cells += [f"{one_voice['epr']['preserved']:.3f} / {one_voice['epr']['swapped']:.3f} ({one_voice['n']})",
                          f"{one_voice['epr']['z']:.1f}", f"{one_voice['expected_agreement']['z']:.1f}",
                          _z(one_voice, "bhattacharyya")]
            else:
                cells += ["-"] * 4
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _z(separation_result: dict, metric: str) -> str:
    return f"{separation_result[metric]['z']:.1f}" if metric in separation_result else "-"


def all_corpora_markdown(results: dict) -> str:
    """The head trained on all four corpora (per variant): UA on each corpus's test part, z on each pair set's test
    pairs (random target voices; one voice per source speaker)."""
    lines = ["| variant | RAVDESS test UA | JVNV test UA | EmoDB test UA | ASED test UA | en-ja EPR z / EA z / BC z | "
             "en-de EPR z / EA z / BC z | en-am EPR z / EA z / BC z | one voice: en-ja | en-de | en-am |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        scores = seed_mean(result["folds"]["all"])
        cells = [name.removeprefix("loco:").replace("|", "\\|")] + [f"{scores[f'{c}/test_ua']:.3f}" for c in CORPORA]
        for suffix in PAIR_VOICES:
            for pair_name in PAIR_NAMES.values():
                sep = scores.get(f"{pair_name}{suffix}/test")
                cells.append(f"{sep['epr']['z']:.1f} / {sep['expected_agreement']['z']:.1f} / {_z(sep, 'bhattacharyya')}"
                             if sep else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selection_score(result: dict) -> float:
    """The selection rule: the mean, over the four left-out corpora, of UA on the left-out corpus's non-test part."""
    return float(np.mean([seed_mean(result["folds"][c])[f"{c}/select_ua"] for c in CORPORA]))


LICENCES = {"ravdess": "RAVDESS, CC BY-NC-SA 4.0 (Livingstone & Russo 2018)",
            "jvnv": "JVNV, CC BY-SA 4.0 (Xin et al. 2024)",
            "emodb": "Berlin EmoDB (Burkhardt et al. 2005), free for research; audb lists CC0-1.0",
            "ased": "ASED v1 (Retta et al. 2023): its publisher states no licence; research use only"}


def shared_pairs(data: dict, name: str, split: str = "test") -> list[dict]:
    """Rows of ../shared/data/pairs/NAME.csv (one split) with the data indexes of their three files."""
    where = {rel: i for i, rel in enumerate(data["rel"])}
    with open(DATA / "pairs" / f"{name}.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == split]
    return [dict(r, _s=where[r["source"]], _p=where[r["target_preserved"]], _w=where[r["target_swapped"]]) for r in rows]


def head_scores(data: dict, base: np.ndarray, labels: np.ndarray, head, by_speaker: bool) -> tuple[dict, dict]:
    """A head's UA/WA on every corpus split, and its separation on each test pair set; `by_speaker`: each speaker
    standardised on its own (a side head read with a speaker group column)."""
    scores, separations = {}, {}
    for corpus in CORPORA:
        for split in ("train", "dev", "test"):
            index = np.flatnonzero((data["corpus"] == corpus) & (data["split"] == split) & (labels != "-"))
            if len(index):
                gold = np.array([head.classes.index(v) for v in labels[index]])
                groups = data["speaker"][index] if by_speaker else None
                result = classification_scores(gold, side_probs(head, base, index, groups).argmax(1),
                                               len(head.classes))
                scores[f"{corpus}/{split}"] = {k: result[k] for k in ("ua", "wa", "n")}

    def separation_of(pairs):
        return pair_separation(head, base, pairs,
                               np.array([data["speaker"][r["_s"]] for r in pairs]) if by_speaker else None)

    for corpus, name in PAIR_NAMES.items():
        for suffix, voices in PAIR_VOICES.items():
            separations[f"{name}{suffix} split-targets test"] = separation_of(
                [r for r in build_pairs(data, corpus, voices=voices) if r["split"] == "test"])
    for name in ("en-ja", "en-de"):
        separations[f"pairs/{name}.csv test"] = separation_of(shared_pairs(data, name))
    return scores, separations


def rescore(data: dict, folder: Path, by_speaker: bool) -> dict:
    """Score a saved head again (e.g. read per speaker) without retraining it: head.json's scores and
    per_corpus_scores.json are rewritten, the weights are left as they are."""
    from models.ser.head import META_FILE, SerHead

    head = SerHead.load(folder)
    base = features(data["path"])
    scores, separations = head_scores(data, base, labels_for(data["emotion"], "neutral"), head, by_speaker)
    reading = "per speaker" if by_speaker else "per side" if head.normalization == "per_side" else "per utterance"
    meta = json.loads((folder / META_FILE).read_text())
    meta.update(scores=scores, scores_reading=reading, scores_date=time.strftime("%Y-%m-%d"))
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    summary_path = folder / "per_corpus_scores.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary.update(sha256=head.sha256(), per_corpus=scores, separation=separations, reading=reading,
                   rescored=time.strftime("%Y-%m-%d"))
    summary_path.write_text(json.dumps(summary, indent=2))
    print(json.dumps({"sha256": head.sha256(), "reading": reading, "per_corpus": scores,
                      "separation": separations}, indent=2))
    return summary


def ship_multi(data: dict, variant_name: str, ensemble: int, out: Path, selection: str) -> dict:
    """Train the shipped lite head on the training splits of all four corpora with one LOCO variant (`ensemble`
    networks, seeds 1..N, each with its dev-best epoch) and write it with its scores to `out`."""
    from models.ser.head import SerHead
    from models.ser.training import EgemapsExtractor, recipe_metadata, training_data_hash

    base, hashes = extract_features(list(data["path"]), EgemapsExtractor(), CACHE)
    labels = labels_for(data["emotion"], "neutral")
    variant = dict(LOCO_VARIANTS[variant_name], ensemble=ensemble)
    started = time.monotonic()
    run = train_variant(data, base, labels, data["split"] == "train", data["split"] == "dev", variant, seed=1)
    used = np.flatnonzero(labels != "-")
    config = variant_config(STUDY_CONFIG, variant, seed=1)
    head = run.head
    scores, separations = head_scores(data, base, labels, head, by_speaker=variant.get("groups") == "speaker")
    head.metadata = {
        **head.metadata, "source": f"bench/ser_quality.py --ship-multi {variant_name} --ensemble {ensemble}",
        "split_rule": SPLIT_RULE_TEXT, "label_map": {"calm": "neutral", "boredom": "-"},
        "recipe": recipe_metadata(config), "balance": variant.get("balance", "clustercentroids"),
        "corpus_balance": bool(variant.get("corpus_balance")), "variant": variant_name, "selection": selection,
        "kept_epoch": [f.kept_epoch for f in run.member_fits],
        "training_data_sha256": training_data_hash([hashes[i] for i in used], labels[used].tolist(),
                                                   data["split"][used].tolist(), EgemapsExtractor().signature),
        "feature_signature": EgemapsExtractor().signature, "corpora": list(CORPORA),
        "licences": LICENCES, "scores": scores, "date": time.strftime("%Y-%m-%d")}
    if out.exists():
        for item in out.iterdir():
            if item.name != "MODEL_CARD.md":
                item.unlink()
    head.save(out)
    summary = {"variant": variant_name, "ensemble": ensemble, "sha256": SerHead.load(out).sha256(),
               "seconds": round(time.monotonic() - started, 1), "per_corpus": scores, "separation": separations,
               "dev_ua": run.metrics["dev"]["ua"], "kept_epochs": head.metadata["kept_epoch"]}
    (out / "per_corpus_scores.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--json", type=Path, default=ROOT / ".cache" / "ser_quality.json")
    parser.add_argument("--ship", action="store_true", help="train the shipped head (models/artifacts/ser_lite)")
    parser.add_argument("--ensemble", type=int, default=1,
                        help="with --ship: one head averaging this many networks (seeds 1..N) instead of "
                             "the best of --seeds single networks")
    parser.add_argument("--speed-perturb", type=float, nargs="*", default=[],
                        help="with --ship: speed-perturbed copies of the training split at these factors")
    parser.add_argument("--loco", nargs="*", metavar="VARIANT",
                        help=f"leave-one-corpus-out study of these variants ({', '.join(LOCO_VARIANTS)}; "
                             "none given: all); results to --json")
    parser.add_argument("--write-pairs", type=Path, nargs="?", const=PAIRS_CACHE, default=None, metavar="DIR",
                        help=f"write en-ja/en-de/en-am pairs CSVs whose targets follow the target corpus's split "
                             f"(NAME-split-targets.csv; default folder {PAIRS_CACHE}); `emopres validate` reads them "
                             "with --audio-root ../shared/data")
    parser.add_argument("--bootstrap", type=int, default=2000, help="paired bootstrap resamples in --loco")
    parser.add_argument("--tables", type=Path, nargs="+", default=None, metavar="JSON",
                        help="print the markdown tables of --loco results")
    parser.add_argument("--ship-multi", metavar="VARIANT", default=None,
                        help="train the shipped head on all four corpora with this LOCO variant (and --ensemble)")
    parser.add_argument("--rescore", type=Path, default=None, metavar="DIR",
                        help="score a saved head again on every corpus split and test pair set (no training)")
    parser.add_argument("--by-speaker", action="store_true",
                        help="with --rescore: standardise each speaker on its own (a per_side head)")
    parser.add_argument("--selection", default="", help="with --ship-multi: how the variant was chosen (recorded)")
    parser.add_argument("--out", type=Path, default=None,
                        help="with --ship-multi: the head's folder (default: models/artifacts/ser_lite, or "
                             "models/artifacts/ser_lite_side for a per-side variant)")
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
        print("\nselection score (mean left-out non-test UA): "
              + ", ".join(f"{k.removeprefix('loco:')} {selection_score(v):.3f}" for k, v in results.items()))
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
