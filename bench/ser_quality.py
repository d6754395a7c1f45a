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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.ser_training import (MELD_CLASSES, TrainConfig, classification_scores, extract_features,  # noqa: E402
                                 speed_perturb, train_one)

DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / ".cache" / "features"
RAVDESS_SPLIT = {"train": range(1, 15), "dev": range(15, 18), "test": range(18, 21)}


def ravdess_split(speaker: str) -> str:
    return next(name for name, members in RAVDESS_SPLIT.items() if int(speaker) in members)


def jvnv_split(number: str) -> str:
    return {0: "train", 1: "train", 2: "train", 3: "dev", 4: "test"}[int(number) % 5]


def load_all() -> dict:
    rows = []
    for corpus in ("ravdess", "jvnv"):
        with open(DATA / corpus / "manifest.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                split = ravdess_split(row["speaker"]) if corpus == "ravdess" else jvnv_split(row["number"])
                rows.append({"path": DATA / corpus / row["path"], "rel": f"{corpus}/{row['path']}", "corpus": corpus,
                             "speaker": f"{corpus}:{row['speaker']}", "emotion": row["emotion"], "split": split})
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
        from models.ser_training import EgemapsExtractor

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

    from models.ser_head import SerHead
    from models.ser_training import load_manifest, train_ser

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
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"no data at {DATA}", file=sys.stderr)
        return 1
    data = load_all()
    if args.ship:
        from models.ser_head import SHIPPED_LITE_HEAD

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
