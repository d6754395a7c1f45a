"""bench/ser_quality.py --loco (bench/ser_loco.py, pairs from bench/ser_pairs.py): the leave-one-corpus-out tables
report the mean over every seed of a fold."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
ser_loco = pytest.importorskip("ser_loco")
ser_pairs = pytest.importorskip("ser_pairs")


def separation(preserved: float, swapped: float, z: float) -> dict:
    return {
        "n": 132,
        "epr": {"preserved": preserved, "swapped": swapped, "z": z},
        "expected_agreement": {"preserved": preserved / 2, "swapped": swapped / 2, "z": 2 * z},
        "bhattacharyya": {"preserved": preserved / 3, "swapped": swapped / 3, "z": 3 * z},
    }


FOLD = {
    1: {"emodb/select_ua": 0.20, "emodb/test_ua": 0.30, "kept_epoch": 10, "en-de/test": separation(0.4, 0.2, 1.0)},
    2: {"emodb/select_ua": 0.30, "emodb/test_ua": 0.40, "kept_epoch": 20, "en-de/test": separation(0.2, 0.2, 3.0)},
}


def test_seed_mean_averages_numbers_and_keeps_shared_counts():
    mean = ser_loco.seed_mean(FOLD)
    assert mean["emodb/select_ua"] == pytest.approx(0.25) and mean["kept_epoch"] == pytest.approx(15)
    assert mean["en-de/test"]["epr"]["z"] == pytest.approx(2.0)
    assert mean["en-de/test"]["expected_agreement"]["preserved"] == pytest.approx(0.15)
    assert mean["en-de/test"]["n"] == 132 and isinstance(mean["en-de/test"]["n"], int)


def test_loco_table_shows_the_mean_over_seeds_not_the_first_seed():
    results = {"loco:none": {"folds": {"emodb": FOLD}}}
    table = ser_loco.loco_markdown(results, "test")
    row = next(line for line in table.splitlines() if line.startswith("| none | emodb"))
    assert (
        row
        == "| none | emodb | 0.350 | en-de (132) | 0.300 / 0.200 | 2.0 | 0.150 / 0.100 | 4.0 | 6.0 | - | - | - | - |"
    )


def test_loco_table_shows_the_one_voice_pairs_next_to_the_random_ones():
    fold = {seed: {**scores, "en-de+1voice/test": separation(0.5, 0.1, 5.0 + seed)} for seed, scores in FOLD.items()}
    table = ser_loco.loco_markdown({"loco:none|side|speaker": {"folds": {"emodb": fold}}}, "test")
    row = next(line for line in table.splitlines() if "emodb" in line)
    assert row.endswith("| 0.150 / 0.100 | 4.0 | 6.0 | 0.500 / 0.100 (132) | 6.5 | 13.0 | 19.5 |")
    assert row.startswith("| none\\|side\\|speaker | emodb |")


def test_one_voice_pairs_give_each_source_speaker_one_target_speaker():
    import numpy as np

    speakers = [f"ravdess:{n:02d}" for n in (1, 2, 15, 18, 19)] + ["emodb:03", "emodb:08", "emodb:09", "emodb:10"]
    rows = []
    for speaker in speakers:
        for emotion in ("angry", "sad", "neutral", "happy"):
            for take in range(3):
                split = (
                    "test"
                    if speaker in ("ravdess:18", "ravdess:19", "emodb:03", "emodb:08")
                    else "dev"
                    if speaker == "ravdess:15"
                    else "train"
                )
                rows.append(
                    {
                        "rel": f"{speaker}/{emotion}{take}",
                        "corpus": speaker.split(":")[0],
                        "speaker": speaker,
                        "emotion": emotion,
                        "split": split,
                    }
                )
    data = {key: np.array([r[key] for r in rows]) for key in rows[0]}
    pairs = ser_pairs.build_pairs(data, "emodb", voices="one-per-speaker")
    voices = {}
    for pair in pairs:
        target_speakers = {data["speaker"][pair["_p"]], data["speaker"][pair["_w"]]}
        voices.setdefault(data["speaker"][pair["_s"]], set()).update(target_speakers)
        assert data["split"][pair["_p"]] == "test" if pair["split"] == "test" else data["split"][pair["_p"]] == "train"
        assert data["emotion"][pair["_w"]] != data["emotion"][pair["_s"]]
    assert all(len(v) == 1 for v in voices.values())  # one target voice per source speaker
    assert voices["ravdess:18"] != voices["ravdess:19"]  # assigned in turn over the target speakers
    assert len(pairs) == 5 * 4 * 3
    random_voices = ser_pairs.build_pairs(data, "emodb")
    assert len({data["speaker"][p["_p"]] for p in random_voices if p["_s"] < 12}) > 1


def test_the_feature_groups_split_the_88_egemaps_functionals():
    import numpy as np

    masks = [~ser_loco.kept_features(group) for group in ser_loco.EGEMAPS_GROUPS]
    assert all(len(mask) == 88 and mask.any() for mask in masks)
    assert np.array_equal(np.sum(masks, axis=0), np.ones(88, int))  # each feature in exactly one group
    assert ser_loco.kept_features(None).all() and (~ser_loco.kept_features("temporal")).sum() == 6
