"""SER head training (paper recipe) on real speech from the shared data (EMOPRES_SHARED_DATA, default
../shared/data: tests/conftest.py's SHARED_DATA). The shipped lite head and the head format: test_ser_head.py.

A small imbalanced RAVDESS subset is written to a manifest and trained through the CLI once
(module fixture); the tests check what the optimiser saw, the kept epoch and the saved head.
Features are cached under .cache/features in the repository (git-ignored).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.ser.head import SerHead
from models.ser.training import (
    EgemapsExtractor,
    TrainConfig,
    TrainingError,
    balance_training_set,
    classification_scores,
    extract_features,
    load_manifest,
    train_one,
)
from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[2]
DATA = SHARED_DATA
CACHE = REPO / ".cache" / "features"
needs_data = pytest.mark.skipif(
    not (DATA / "ravdess" / "manifest.csv").is_file(),
    reason=f"real speech corpora not found at {DATA} (set EMOPRES_SHARED_DATA)",
)

# actors 01-04 train, 05 dev, 06 test; four classes with unequal counts per actor:
# neutral = neutral + calm (12), anger (8), sadness (8), joy normal intensity only (4)
SUBSET_ACTORS = {"01": "train", "02": "train", "03": "train", "04": "train", "05": "dev", "06": "test"}
SUBSET_EPOCHS = 12


def _subset_rows() -> list[dict]:
    rows = []
    with open(DATA / "ravdess" / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["speaker"] not in SUBSET_ACTORS:
                continue
            if row["emotion"] not in {"neutral", "calm", "anger", "sadness", "joy"}:
                continue
            if row["emotion"] == "joy" and row["intensity"] != "normal":
                continue
            rows.append(
                {
                    "path": row["path"],
                    "speaker": row["speaker"],
                    "emotion": row["emotion"],
                    "split": SUBSET_ACTORS[row["speaker"]],
                }
            )
    return rows


def write_subset_manifest(path: Path) -> Path:
    """The subset (SUBSET_ACTORS) as a manifest at `path` (with a split column)."""
    rows = _subset_rows()
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def subset_manifest(tmp_path_factory) -> Path:
    return write_subset_manifest(tmp_path_factory.mktemp("manifest") / "subset.csv")


@pytest.fixture(scope="module")
def trained(subset_manifest, tmp_path_factory):
    """Train through the CLI once, both balancing settings; returns (head dir, report, exit status)."""
    from cli.main import main

    out = tmp_path_factory.mktemp("head") / "head"
    status = main(
        [
            "train-ser",
            str(subset_manifest),
            "--audio-root",
            str(DATA / "ravdess"),
            "--features",
            "egemaps",
            "--out",
            str(out),
            "--balance",
            "both",
            "--label-map",
            "calm=neutral",
            "--seed",
            "7",
            "--max-epochs",
            str(SUBSET_EPOCHS),
            "--cache-dir",
            str(CACHE),
        ]
    )
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else None
    return out, report, status


@pytest.fixture(scope="module")
def subset_features(subset_manifest):
    dataset = load_manifest(subset_manifest, DATA / "ravdess", label_map={"calm": "neutral"})
    features, _ = extract_features(dataset.paths, EgemapsExtractor(), CACHE)
    return dataset, features


# ------------------------------------------------------------------------------------------ real data


@needs_data
def test_cli_writes_a_complete_head_directory(trained):
    out, report, status = trained
    assert status == 0
    for name in ("head.safetensors", "head.json", "report.json", "report.md"):
        assert (out / name).is_file(), name
    for balance in ("clustercentroids", "none"):
        for split in ("train", "dev", "test"):
            png = out / f"confusion_{balance}_{split}.png"
            assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((out / "head.json").read_text())
    assert meta["classes"] == ["anger", "joy", "neutral", "sadness"]
    assert meta["feature_set"] == "egemaps-v02" and meta["n_features"] == 88
    assert meta["hidden"] == [64, 32] and meta["dropout"] == 0.3
    assert meta["recipe"]["batch_size"] == 2 and "Linear(32,64)" in meta["recipe"]["architecture_note"]
    assert meta["architecture"] == "paper" and meta["recipe"]["architecture"] == "paper"
    assert meta["normalization"] == "per_utterance"
    assert meta["balance"] == report["selected_balance"]
    assert len(meta["training_data_sha256"]) == 64
    assert [v["source"] for v in meta["split"].values()] == ["column:split"]
    # Table 2: one row per balancing setting, UA and WA for train/dev/test
    rows = report["table2"].splitlines()
    assert rows[0].startswith("| balancing | train UA | train WA | dev UA | dev WA | test UA | test WA |")
    assert {r.split("|")[1].strip() for r in rows[2:]} == {"clustercentroids", "none"}
    for run in report["runs"].values():
        for split in ("train", "dev", "test"):
            scores = run["metrics"][split]
            confusion = np.array(scores["confusion"])
            assert confusion.shape == (4, 4) and confusion.sum() == scores["n"]
            assert scores["wa"] == pytest.approx(np.trace(confusion) / confusion.sum())


@needs_data
def test_clustercentroids_reduces_every_class_to_the_minority_count(trained):
    _, report, _ = trained
    classes = report["classes"]
    # what the manifest holds for the four training actors
    expected = {"anger": 32, "joy": 16, "neutral": 48, "sadness": 32}
    assert report["split_counts"]["train"] == expected
    balanced = report["runs"]["clustercentroids"]
    plain = report["runs"]["none"]
    assert balanced["train_class_counts"] == expected
    # the labels in the optimiser's batches during one epoch
    assert balanced["optimiser_class_counts"] == {c: 16 for c in classes}
    assert plain["optimiser_class_counts"] == expected


@needs_data
def test_balancing_on_real_features_matches_imbalanced_learn(subset_features):
    dataset, features = subset_features
    train = dataset.splits == "train"
    classes = sorted(set(dataset.labels.tolist()))
    targets = np.array([classes.index(v) for v in dataset.labels[train]])
    x, y = balance_training_set(features[train], targets, "clustercentroids", seed=3)
    assert np.bincount(y).tolist() == [16, 16, 16, 16]
    # centroids are new points (ClusterCentroids, soft voting), not a subset of the inputs
    assert x.shape == (64, 88)
    assert not any((features[train] == row).all(axis=1).any() for row in x[y == classes.index("neutral")])
    same_x, same_y = balance_training_set(features[train], targets, "none")
    assert same_x is features[train] or np.array_equal(same_x, features[train])
    with pytest.raises(TrainingError):
        balance_training_set(features[train], targets, "smote")


@needs_data
def test_kept_epoch_is_the_dev_best_and_the_saved_head_scores_it(trained, subset_features):
    out, report, _ = trained
    dataset, features = subset_features
    head = SerHead.load(out)
    dev = dataset.splits == "dev"
    gold = np.array([head.classes.index(v) for v in dataset.labels[dev]])
    for name, run in report["runs"].items():
        dev_ua = [row["dev_ua"] for row in run["history"]]
        assert len(dev_ua) == SUBSET_EPOCHS
        assert run["kept_epoch"] == int(np.argmax(dev_ua)) + 1, name
        assert run["metrics"]["dev"]["ua"] == pytest.approx(max(dev_ua))
    kept = report["runs"][report["selected_balance"]]
    predicted = head.predict_proba(features[dev]).argmax(axis=1)
    assert classification_scores(gold, predicted, 4)["ua"] == pytest.approx(kept["dev_ua_at_kept_epoch"])
    # the kept head is the better of the two balancing settings on dev
    assert kept["metrics"]["dev"]["ua"] == max(r["metrics"]["dev"]["ua"] for r in report["runs"].values())


@needs_data
def test_ensemble_averages_independent_runs_of_the_recipe(subset_features, tmp_path):
    """Members train like single runs (the first equals the single seed-5 run, the others start from seeds 6
    and 7 on the same balanced set), each keeps its dev-best epoch, and the head averages their probabilities."""
    dataset, features = subset_features
    classes = sorted(set(dataset.labels.tolist()))
    targets = np.array([classes.index(v) for v in dataset.labels])
    config = dict(max_epochs=6, learning_rate=3e-3)
    ensemble = train_one(
        features,
        targets,
        dataset.splits,
        classes,
        feature_set="egemaps-v02",
        balance="clustercentroids",
        config=TrainConfig(seed=5, ensemble=3, **config),
    )
    single = train_one(
        features,
        targets,
        dataset.splits,
        classes,
        feature_set="egemaps-v02",
        balance="clustercentroids",
        config=TrainConfig(seed=5, **config),
    )
    assert ensemble.head.members == 3 and len(ensemble.member_fits) == 3
    for fit in ensemble.member_fits:
        dev_ua = [row["dev_ua"] for row in fit.history]
        assert fit.kept_epoch == int(np.argmax(dev_ua)) + 1
    first = ensemble.head.network.members[0]
    for name, tensor in single.head.network.state_dict().items():
        assert torch.equal(first.state_dict()[name], tensor), name
    with torch.no_grad():
        standardised = torch.from_numpy(ensemble.head.standardise(features))
        members = [
            np.concatenate(
                [torch.softmax(m(standardised[i : i + 1]).double(), dim=1).numpy() for i in range(len(standardised))]
            )
            for m in ensemble.head.network.members
        ]
    probabilities = ensemble.head.predict_proba(features)
    np.testing.assert_allclose(probabilities, np.mean(members, axis=0), atol=1e-12)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    assert not np.allclose(members[0], members[1])  # the members differ
    # saved and reloaded: same members, same outputs, same hash; a single network keeps the old format
    ensemble.head.save(tmp_path / "ensemble")
    reloaded = SerHead.load(tmp_path / "ensemble")
    assert json.loads((tmp_path / "ensemble" / "head.json").read_text())["members"] == 3
    assert reloaded.members == 3 and reloaded.sha256() == ensemble.head.sha256()
    np.testing.assert_array_equal(reloaded.predict_proba(features), probabilities)
    single.head.save(tmp_path / "single")
    assert "members" not in json.loads((tmp_path / "single" / "head.json").read_text())


@needs_data
def test_speed_perturbed_copies_train_but_are_never_scored(subset_manifest, trained, tmp_path):
    from cli.main import main
    from models.ser.training import speed_perturb

    out = tmp_path / "head"
    status = main(
        [
            "train-ser",
            str(subset_manifest),
            "--audio-root",
            str(DATA / "ravdess"),
            "--features",
            "egemaps",
            "--out",
            str(out),
            "--balance",
            "none",
            "--label-map",
            "calm=neutral",
            "--seed",
            "7",
            "--max-epochs",
            "3",
            "--cache-dir",
            str(CACHE),
            "--speed-perturb",
            "0.9,1.1",
            "--quiet",
        ]
    )
    assert status == 0
    report = json.loads((out / "report.json").read_text())
    run = report["runs"]["none"]
    originals = {"anger": 32, "joy": 16, "neutral": 48, "sadness": 32}
    assert run["train_class_counts"] == {k: 3 * v for k, v in originals.items()}  # originals + two copies
    assert run["optimiser_class_counts"] == run["train_class_counts"]
    assert run["metrics"]["train"]["n"] == 128 and run["metrics"]["dev"]["n"] == 32  # copies are never scored
    head = SerHead.load(out)
    assert "speed perturbation 0.9, 1.1" in head.metadata["recipe"]["augmentation"]
    assert report["training_data_sha256"] != trained[1]["training_data_sha256"]  # the copies are part of the data
    wave = np.sin(np.arange(16_000) / 16_000 * 2 * np.pi * 220).astype(np.float32)
    assert len(speed_perturb(wave, 1.1)) == round(16_000 / 1.1) and len(speed_perturb(wave, 0.9)) == round(16_000 / 0.9)
    assert (
        main(
            [
                "train-ser",
                str(subset_manifest),
                "--features",
                "egemaps",
                "--out",
                str(tmp_path / "x"),
                "--speed-perturb",
                "1.0",
            ]
        )
        == 2
    )


@needs_data
def test_dev_best_epoch_not_last_epoch(subset_features):
    """A run whose dev UA peaks early must keep that early epoch, not the last one."""
    dataset, features = subset_features
    classes = sorted(set(dataset.labels.tolist()))
    targets = np.array([classes.index(v) for v in dataset.labels])
    rows = []
    run = train_one(
        features,
        targets,
        dataset.splits,
        classes,
        feature_set="egemaps-v02",
        balance="none",
        config=TrainConfig(max_epochs=25, learning_rate=3e-3, seed=5),
        progress=rows.append,
    )
    dev_ua = [r["dev_ua"] for r in rows]
    assert run.fit.kept_epoch == int(np.argmax(dev_ua)) + 1
    dev = dataset.splits == "dev"
    again = run.head.predict_proba(features[dev]).argmax(1)
    assert classification_scores(targets[dev], again, len(classes))["ua"] == pytest.approx(max(dev_ua))


@needs_data
def test_saved_head_reloads_bit_identically(subset_features, tmp_path):
    dataset, features = subset_features
    classes = sorted(set(dataset.labels.tolist()))
    targets = np.array([classes.index(v) for v in dataset.labels])
    run = train_one(
        features,
        targets,
        dataset.splits,
        classes,
        feature_set="egemaps-v02",
        balance="clustercentroids",
        config=TrainConfig(max_epochs=4, seed=11),
        metadata={"normalization": "per_utterance"},
    )
    original = run.head
    original.save(tmp_path / "a")
    loaded = SerHead.load(tmp_path / "a")
    state_a, state_b = original.network.state_dict(), loaded.network.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert np.array_equal(original.scaler_mean, loaded.scaler_mean)
    assert np.array_equal(original.scaler_scale, loaded.scaler_scale)
    assert loaded.sha256() == original.sha256()
    assert loaded.classes == classes and loaded.metadata["normalization"] == "per_utterance"
    assert np.array_equal(original.predict_proba(features), loaded.predict_proba(features))
    per_utterance = np.concatenate([loaded.predict_proba(row) for row in features[:10]])
    assert np.allclose(per_utterance, loaded.predict_proba(features[:10]), atol=1e-12)
    loaded.save(tmp_path / "b")
    assert (tmp_path / "a" / "head.safetensors").read_bytes() == (tmp_path / "b" / "head.safetensors").read_bytes()


@needs_data
def test_speaker_independent_split_when_manifest_has_no_split_column(tmp_path):
    manifest = DATA / "ravdess" / "manifest.csv"
    dataset = load_manifest(manifest, seed=3)
    info = dataset.split_info["ravdess"]
    assert info["source"] == "speaker-independent (seed 3)"
    groups = info["speakers"]
    assert sum(len(v) for v in groups.values()) == 20
    for split, members in groups.items():
        assert set(dataset.speakers[dataset.splits == split]) == set(members)
    assert not set(groups["train"]) & set(groups["dev"]) and not set(groups["dev"]) & set(groups["test"])
    assert load_manifest(manifest, seed=3).splits.tolist() == dataset.splits.tolist()
    dropped = load_manifest(manifest, label_map={"calm": "-"})
    assert "calm" not in set(dropped.labels) and len(dropped) == 1200 - 160


@needs_data
def test_per_side_head_needs_a_whole_side(subset_features, tmp_path):
    from models.ser.head import HeadError, side_standardise
    from models.ser.training import standardise_sides

    dataset, features = subset_features
    classes = sorted(set(dataset.labels.tolist()))
    targets = np.array([classes.index(v) for v in dataset.labels])
    run = train_one(
        features,
        targets,
        dataset.splits,
        classes,
        feature_set="egemaps-v02",
        balance="none",
        config=TrainConfig(max_epochs=3, seed=2),
        normalization="per_side",
    )
    run.head.save(tmp_path)
    head = SerHead.load(tmp_path)
    assert head.normalization == "per_side"
    test = features[dataset.splits == "test"]
    with pytest.raises(HeadError, match="predict_proba_side"):
        head.predict_proba(test)
    with pytest.raises(HeadError):
        head.predict_proba_side(test[:1])
    probs = head.predict_proba_side(test)
    # a side's scores do not depend on its feature offset or scale (that is the point), unlike per_utterance
    assert np.allclose(probs, head.predict_proba_side(test * 1.5 + 3.0), atol=1e-5)
    assert np.allclose(side_standardise(test), standardise_sides(test, np.zeros(len(test))), atol=1e-6)
    # the recorded test scores are what predict_proba_side gives on the test side
    gold = np.array([classes.index(v) for v in dataset.labels[dataset.splits == "test"]])
    assert classification_scores(gold, probs.argmax(1), len(classes))["ua"] == pytest.approx(run.metrics["test"]["ua"])
    assert head.sha256() == run.head.sha256()
    # the normalisation changes the outputs, so it is part of the head's hash
    as_utterance = SerHead.load(tmp_path)
    as_utterance.metadata["normalization"] = "per_utterance"
    assert as_utterance.sha256() != head.sha256()


@needs_data
def test_train_ser_on_emotion2vec_features_from_a_tiny_checkpoint(subset_manifest, tmp_path):
    """--features emotion2vec goes through the paper profile's emotion2vec (random tiny funasr checkpoint)."""
    pytest.importorskip("funasr")
    from cli.main import main
    from tests.paper_fixtures import build_emotion2vec, emotion2vec_config

    model_dir = tmp_path / "models"
    build_emotion2vec(model_dir / "emotion2vec_plus_large")
    rows = list(csv.DictReader(open(subset_manifest)))
    few = [r for r in rows if r["speaker"] in {"01", "05"} and r["emotion"] != "calm"]  # 28 train, 28 dev
    manifest = tmp_path / "few.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(few)
    out = tmp_path / "head"
    status = main(
        [
            "train-ser",
            str(manifest),
            "--audio-root",
            str(DATA / "ravdess"),
            "--features",
            "emotion2vec",
            "--model-dir",
            str(model_dir),
            "--out",
            str(out),
            "--max-epochs",
            "2",
            "--quiet",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert status == 0
    head = SerHead.load(out)
    assert head.feature_set == "emotion2vec_plus_large"
    assert head.n_features == emotion2vec_config()["model_conf"]["embed_dim"]
    report = json.loads((out / "report.json").read_text())
    assert report["feature_signature"].startswith("emotion2vec_plus_large|e2v:")
