"""The leave-one-corpus-out study (`python bench/ser_quality.py --loco [VARIANT ...]`, then `--tables JSON`):
for every variant and corpus C, a head trained on the other corpora and measured on C, on selection data (C's
non-test part, dev-source pairs: what model choices may look at) and report data (C's test part, test-source
pairs: what no choice looks at); plus the head trained on all four corpora. The variants (LOCO_VARIANTS) include
the feature-group ablation (`linear|side|speaker|-GROUP`, EGEMAPS_GROUPS). Also the training recipe and head
reading that --ship-multi and bench/ser_trials.py reuse.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from ser_common import CACHE, CORPORA, features, labels_for
from ser_pairs import PAIR_NAMES, PAIR_VOICES, build_pairs, separation

# after ser_common, which puts the repository on sys.path
from models.ser.training import MELD_CLASSES, TrainConfig, classification_scores, extract_features, train_one

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
    "voicequality": lambda n: (
        n.split("_")[0] in ("jitterLocal", "shimmerLocaldB", "HNRdBACF", "logRelF0-H1-H2", "logRelF0-H1-A3")
    ),
    "formants": lambda n: n[:2] in ("F1", "F2", "F3"),
    "balance": lambda n: n.startswith(("alphaRatio", "hammarberg", "slope")),
    "temporal": lambda n: n.endswith(("PerSec", "SegmentLengthSec", "SegmentLength")),
}
LOCO_VARIANTS.update(
    {
        f"linear|side|speaker|-{group}": dict(LOCO_VARIANTS["linear|side|speaker"], drop=group)
        for group in EGEMAPS_GROUPS
    }
)


def kept_features(drop: str | None) -> np.ndarray:
    """Column mask over the 88 eGeMAPSv02 functionals without the group `drop` (None: all)."""
    import opensmile

    names = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
    ).feature_names
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
    return replace(
        config,
        seed=seed,
        ensemble=variant.get("ensemble", 1),
        architecture=variant.get("architecture", "paper"),
        speed_perturb=tuple(variant.get("speed", ())),
        **{key: variant[key] for key in ("hidden", "weight_decay", "dropout") if key in variant},
    )


def train_variant(
    data: dict,
    base: np.ndarray,
    labels: np.ndarray,
    train_sel: np.ndarray,
    dev_sel: np.ndarray,
    variant: dict,
    seed: int,
    config: TrainConfig | None = None,
):
    """A head trained on train_sel (dev_sel picks the epoch) with one variant's choices."""
    config = config or STUDY_CONFIG
    train_idx = np.flatnonzero(train_sel & (labels != "-"))
    dev_idx = np.flatnonzero(dev_sel & (labels != "-"))
    rows, copies = [train_idx], [np.zeros(len(train_idx), bool)]
    if variant.get("corpus_balance"):
        corpora, counts = np.unique(data["corpus"][train_idx], return_counts=True)
        rng = np.random.default_rng(seed)
        for corpus, count in zip(corpora, counts, strict=True):
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
        augmented = np.concatenate(
            [augmented[:n_train], np.ones(len(train_idx) * len(speed), bool), augmented[n_train:]]
        )
    splits = np.array(["train"] * (len(index) - len(dev_idx)) + ["dev"] * len(dev_idx))
    classes = [c for c in MELD_CLASSES if c in set(labels[train_idx])]
    targets = np.array([classes.index(v) for v in labels[index]])
    unit = data["speaker"] if variant.get("norm") == "speaker" else data["corpus"]
    sides = np.array([f"{u}:{s}" for u, s in zip(unit[index], data["split"][index], strict=True)])
    run = train_one(
        x,
        targets,
        splits,
        classes,
        feature_set="egemaps-v02",
        balance=variant.get("balance", "clustercentroids"),
        config=variant_config(config, variant, seed),
        normalization="per_side" if variant.get("norm") in ("side", "speaker") else "per_utterance",
        sides=sides,
        augmented=augmented,
        metadata={"corpus_balance": bool(variant.get("corpus_balance"))},
    )
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
    pairs = {
        (c, suffix): build_pairs(data, c, voices=voices)
        for c in PAIR_NAMES
        if c in present
        for suffix, voices in PAIR_VOICES.items()
    }
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
                run = train_variant(
                    data,
                    base,
                    labels,
                    others & (data["split"] == "train"),
                    others & (data["split"] == "dev"),
                    variant,
                    seed,
                    config,
                )
                head = run.head
                scores = {"dev_ua": run.metrics["dev"]["ua"], "kept_epoch": run.fit.kept_epoch}
                targets = [held] if held != "all" else present
                for corpus in targets:
                    is_c = data["corpus"] == corpus
                    for part, mask in (("test", data["split"] == "test"), ("select", data["split"] != "test")):
                        if part == "select" and held == "all":
                            continue
                        index = np.flatnonzero(is_c & mask)
                        scores[f"{corpus}/{part}_ua"] = ua_of(
                            head, base, labels, index, data["speaker"][index] if by_speaker else None
                        )
                    for suffix in PAIR_VOICES if corpus in PAIR_NAMES else ():
                        for part, split in (("test", "test"), ("select", "dev")):
                            if part == "select" and held == "all":
                                continue
                            chosen = [r for r in pairs[(corpus, suffix)] if r["split"] == split]
                            groups = np.array([data["speaker"][r["_s"]] for r in chosen]) if by_speaker else None
                            scores[f"{PAIR_NAMES[corpus]}{suffix}/{part}"] = pair_separation(
                                head, base, chosen, groups, n_bootstrap=n_bootstrap
                            )
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
            cells.append(
                f"{key} EPR z {np.mean([f[key]['epr']['z'] for f in fold.values()]):.1f} "
                f"EA z {np.mean([f[key]['expected_agreement']['z'] for f in fold.values()]):.1f}"
            )
    return "  ".join(cells)


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
    lines = [
        "| variant | left out | UA | pairs | EPR pres / swap | EPR z | EA pres / swap | EA z | BC z | "
        "one voice: EPR pres / swap | EPR z | EA z | BC z |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
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
                cells += [
                    f"{pair_name} ({sep['n']})",
                    f"{sep['epr']['preserved']:.3f} / {sep['epr']['swapped']:.3f}",
                    f"{sep['epr']['z']:.1f}",
                    f"{sep['expected_agreement']['preserved']:.3f} / {sep['expected_agreement']['swapped']:.3f}",
                    f"{sep['expected_agreement']['z']:.1f}",
                    _z(sep, "bhattacharyya"),
                ]
            else:
                cells += ["-"] * 6
            if one_voice:
                cells += [
                    f"{one_voice['epr']['preserved']:.3f} / {one_voice['epr']['swapped']:.3f} ({one_voice['n']})",
                    f"{one_voice['epr']['z']:.1f}",
                    f"{one_voice['expected_agreement']['z']:.1f}",
                    _z(one_voice, "bhattacharyya"),
                ]
            else:
                cells += ["-"] * 4
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _z(separation_result: dict, metric: str) -> str:
    return f"{separation_result[metric]['z']:.1f}" if metric in separation_result else "-"


def all_corpora_markdown(results: dict) -> str:
    """The head trained on all four corpora (per variant): UA on each corpus's test part, z on each pair set's test
    pairs (random target voices; one voice per source speaker)."""
    lines = [
        "| variant | RAVDESS test UA | JVNV test UA | EmoDB test UA | ASED test UA | en-ja EPR z / EA z / BC z | "
        "en-de EPR z / EA z / BC z | en-am EPR z / EA z / BC z | one voice: en-ja | en-de | en-am |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        scores = seed_mean(result["folds"]["all"])
        cells = [name.removeprefix("loco:").replace("|", "\\|")] + [f"{scores[f'{c}/test_ua']:.3f}" for c in CORPORA]
        for suffix in PAIR_VOICES:
            for pair_name in PAIR_NAMES.values():
                sep = scores.get(f"{pair_name}{suffix}/test")
                cells.append(
                    f"{sep['epr']['z']:.1f} / {sep['expected_agreement']['z']:.1f} / {_z(sep, 'bhattacharyya')}"
                    if sep
                    else "-"
                )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selection_score(result: dict) -> float:
    """The selection rule: the mean, over the four left-out corpora, of UA on the left-out corpus's non-test part."""
    return float(np.mean([seed_mean(result["folds"][c])[f"{c}/select_ua"] for c in CORPORA]))
