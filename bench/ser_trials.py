"""Exploratory trials for the lite SER head, on SELECTION data only (2026-12-03; model card "Trials 2026-12-03").

    python bench/ser_trials.py extract                      # eGeMAPS functionals + LLDs + librosa MFCCs per file
    python bench/ser_trials.py loco --kinds func func+mfcc --variant none --seeds 2
    python bench/ser_trials.py allfold --seeds 3 [--speed 0.9 1.1] [--hidden 128,64] [--kind func+mfcc] ...
    python bench/ser_trials.py linear --models lr:0.01 lr:0.1 lda:  # scikit-learn classifiers, absolute and per side

loco: leave-one-corpus-out UA on the left-out corpus's non-test part and the separation on dev-source pairs (what
bench/ser_quality.py --loco calls the selection data) for feature sets `kinds` ("func" = the 88 eGeMAPS
functionals; "+lld" LLD mean/std/percentiles; "+mfcc" 20 MFCC mean/std/mean |delta|). allfold: the head trained on
all four corpora, dev UA of RAVDESS / JVNV / ASED and EmoDB with one training speaker held out in turn (EmoDB has
no dev speaker). linear: the loco selection data for scikit-learn classifiers (logistic regression "lr:C", shrinkage
LDA "lda:" or "lda:SHRINKAGE"), each with and without per-side z-scoring. No test speaker or utterance is read.
Results are appended to .cache/ser_trials.jsonl.
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ser_common import CORPORA, ROOT, features, labels_for, load_all, per_group  # noqa: E402
from ser_loco import LOCO_VARIANTS, STUDY_CONFIG, pair_separation, speed_features, train_variant, ua_of  # noqa: E402
from ser_pairs import PAIR_NAMES, build_pairs  # noqa: E402

from models.ser.features import EgemapsExtractor  # noqa: E402
from models.ser.training import MELD_CLASSES, train_one  # noqa: E402

EXPLORE = ROOT / ".cache" / "explore"
RESULTS = ROOT / ".cache" / "ser_trials.jsonl"


def extract(data) -> None:
    import librosa

    from core.audio import load_audio_file

    extractor = EgemapsExtractor()
    EXPLORE.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(data["path"]):
        target = EXPLORE / (data["rel"][i].replace("/", "__") + ".npz")
        if target.exists():
            continue
        wave, _ = load_audio_file(path)
        functionals, lld = extractor._egemaps.extract(wave)
        mfcc = librosa.feature.mfcc(y=wave, sr=16000, n_mfcc=20, n_fft=400, hop_length=160, n_mels=40)
        np.savez(target, func=functionals, lld=lld, mfcc=mfcc.astype(np.float32))


def load_cache(data):
    return [np.load(EXPLORE / (r.replace("/", "__") + ".npz")) for r in data["rel"]]


def stats(m, axis=0):
    return np.concatenate(
        [m.mean(axis), m.std(axis), np.percentile(m, 10, axis), np.percentile(m, 50, axis), np.percentile(m, 90, axis)]
    )


def build(entries, kind):
    rows = []
    for e in entries:
        parts = []
        for k in kind.split("+"):
            if k == "func":
                parts.append(e["func"])
            elif k == "lld":
                parts.append(stats(e["lld"]))
            elif k == "mfcc":
                m = e["mfcc"]
                parts.append(np.concatenate([m.mean(1), m.std(1), np.abs(np.diff(m, axis=1)).mean(1)]))
            else:
                raise ValueError(k)
        rows.append(np.concatenate(parts))
    return np.asarray(rows, np.float32)


def loco_selection(data, base, variant, seeds, config):
    labels = labels_for(data["emotion"], "neutral")
    pairs = {c: build_pairs(data, c) for c in PAIR_NAMES}
    res = {}
    for held in CORPORA:
        others = data["corpus"] != held
        cells = []
        for seed in seeds:
            head = train_variant(
                data,
                base,
                labels,
                others & (data["split"] == "train"),
                others & (data["split"] == "dev"),
                variant,
                seed,
                config,
            ).head
            cell = {
                "ua": ua_of(head, base, labels, np.flatnonzero((data["corpus"] == held) & (data["split"] != "test")))
            }
            if held in pairs:
                s = pair_separation(head, base, [p for p in pairs[held] if p["split"] == "dev"], n_bootstrap=500)
                cell["epr_z"], cell["ea_z"] = s["epr"]["z"], s["expected_agreement"]["z"]
            cells.append(cell)
        res[held] = {k: round(float(np.mean([c[k] for c in cells])), 3) for k in cells[0]}
    return res


class LinearSide:
    """A scikit-learn classifier on standardised eGeMAPS, optionally per side (each corpus split z-scored with its own
    statistics in training, each evaluated side at inference), with the head interface ua_of/pair_separation read."""

    def __init__(self, name: str, classes: list[str], per_side: bool):
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        from sklearn.linear_model import LogisticRegression

        kind, _, arg = name.partition(":")
        self.model = (
            LogisticRegression(C=float(arg), max_iter=3000)
            if kind == "lr"
            else LinearDiscriminantAnalysis(solver="lsqr", shrinkage=float(arg) if arg else "auto")
        )
        self.classes, self.per_side = classes, per_side

    def fit(self, x, y, sides):
        from sklearn.preprocessing import StandardScaler

        x = per_group(x, sides) if self.per_side else x
        self.scaler = StandardScaler().fit(x)
        self.model.fit(self.scaler.transform(x), y)
        return self

    def predict_proba_side(self, x):
        x = per_group(x, np.zeros(len(x))) if self.per_side else x
        out = np.zeros((len(x), len(self.classes)))
        out[:, self.model.classes_] = self.model.predict_proba(self.scaler.transform(x))
        return out


def linear(data, base, names):
    labels = labels_for(data["emotion"], "neutral")
    pairs = {c: build_pairs(data, c) for c in PAIR_NAMES}
    lines = []
    for name in names:
        for per_side in (False, True):
            res = {}
            for held in CORPORA:
                train = np.flatnonzero((data["corpus"] != held) & (data["split"] == "train") & (labels != "-"))
                classes = [c for c in MELD_CLASSES if c in set(labels[train])]
                sides = np.array([f"{c}:{s}" for c, s in zip(data["corpus"][train], data["split"][train], strict=True)])
                head = LinearSide(name, classes, per_side).fit(
                    base[train].astype(np.float64), np.array([classes.index(v) for v in labels[train]]), sides
                )
                cell = {
                    "ua": round(
                        ua_of(head, base, labels, np.flatnonzero((data["corpus"] == held) & (data["split"] != "test"))),
                        3,
                    )
                }
                if held in pairs:
                    s = pair_separation(head, base, [p for p in pairs[held] if p["split"] == "dev"], n_bootstrap=500)
                    cell["epr_z"], cell["ea_z"] = round(s["epr"]["z"], 2), round(s["expected_agreement"]["z"], 2)
                res[held] = cell
            lines.append(
                {
                    "command": "linear",
                    "model": name,
                    "per_side": per_side,
                    "loco_ua_mean": round(float(np.mean([r["ua"] for r in res.values()])), 3),
                    **res,
                }
            )
    return lines


def fit_all(data, base, labels, train_sel, dev_sel, seed, args, speed_copies):
    train = np.flatnonzero(train_sel & (labels != "-"))
    dev = np.flatnonzero(dev_sel & (labels != "-"))
    xs, ys = (
        [base[train]] + [speed_copies[f][train] for f in args.speed] + [base[dev]],
        [labels[train]] * (1 + len(args.speed)) + [labels[dev]],
    )
    augmented = np.concatenate(
        [np.zeros(len(train), bool)] + [np.ones(len(train), bool)] * len(args.speed) + [np.zeros(len(dev), bool)]
    )
    x, y = np.concatenate(xs), np.concatenate(ys)
    splits = np.array(["train"] * (len(x) - len(dev)) + ["dev"] * len(dev))
    classes = [c for c in MELD_CLASSES if c in set(labels[train])]
    config = replace(
        STUDY_CONFIG,
        seed=seed,
        batch_size=args.batch,
        learning_rate=args.lr,
        weight_decay=args.wd,
        hidden=tuple(int(h) for h in args.hidden.split(",")),
    )
    return train_one(
        x,
        np.array([classes.index(v) for v in y]),
        splits,
        classes,
        feature_set="egemaps-v02",
        balance=args.balance,
        config=config,
        augmented=augmented,
    ).head


def allfold(data, base, args):
    labels = labels_for(data["emotion"], "neutral")
    speed_copies = {}
    for factor in args.speed:
        speed_copies[factor] = np.zeros_like(base)
        train = np.flatnonzero(data["split"] == "train")
        speed_copies[factor][train] = speed_features(data, train, factor)
    res = {}
    for seed in range(1, args.seeds + 1):
        head = fit_all(
            data, base, labels, data["split"] == "train", data["split"] == "dev", seed * 100, args, speed_copies
        )
        for corpus in ("ravdess", "jvnv", "ased"):
            dev = np.flatnonzero((data["corpus"] == corpus) & (data["split"] == "dev"))
            res.setdefault(f"{corpus}_dev", []).append(ua_of(head, base, labels, dev))
        for speaker in ("09", "10", "11"):  # EmoDB's training speakers, one held out in turn (never 03 / 08)
            held = data["speaker"] == f"emodb:{speaker}"
            head = fit_all(
                data,
                base,
                labels,
                (data["split"] == "train") & ~held,
                data["split"] == "dev",
                seed * 100,
                args,
                speed_copies,
            )
            res.setdefault("emodb_lso", []).append(ua_of(head, base, labels, np.flatnonzero(held)))
    out = {k: round(float(np.mean(v)), 3) for k, v in res.items()}
    out["mean"] = round(float(np.mean(list(out.values()))), 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("extract", "loco", "allfold", "linear"))
    parser.add_argument("--models", nargs="+", default=["lr:0.01", "lr:0.1", "lda:"])
    parser.add_argument("--kinds", nargs="+", default=["func"])
    parser.add_argument("--kind", default="func")
    parser.add_argument("--variant", default="none", help=f"loco: one of {', '.join(LOCO_VARIANTS)}")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--speed", type=float, nargs="*", default=[])
    parser.add_argument("--balance", default="none")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--wd", type=float, default=0.0)
    parser.add_argument("--hidden", default="64,32")
    args = parser.parse_args()
    data = load_all(CORPORA)
    if args.command == "extract":
        extract(data)
        return 0
    started = time.monotonic()
    if args.command == "loco":
        lines = []
        for kind in args.kinds:
            base = build(load_cache(data), kind)
            res = loco_selection(data, base, LOCO_VARIANTS[args.variant], tuple(range(1, args.seeds + 1)), STUDY_CONFIG)
            lines.append(
                {
                    "command": "loco",
                    "kind": kind,
                    "variant": args.variant,
                    "seeds": args.seeds,
                    "loco_ua_mean": round(float(np.mean([r["ua"] for r in res.values()])), 3),
                    **res,
                }
            )
    elif args.command == "linear":
        lines = linear(data, features(data["path"]), args.models)
    else:
        base = build(load_cache(data), args.kind) if args.kind != "func" else features(data["path"])
        lines = [
            {
                "command": "allfold",
                **{k: v for k, v in vars(args).items() if k not in ("command", "kinds", "variant")},
                **allfold(data, base, args),
            }
        ]
    with RESULTS.open("a") as handle:
        for line in lines:
            line["seconds"] = round(time.monotonic() - started)
            print(json.dumps(line), flush=True)
            handle.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
