"""bench/ser_quality.py: the leave-one-corpus-out tables report the mean over every seed of a fold."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
ser_quality = pytest.importorskip("ser_quality")


def separation(preserved: float, swapped: float, z: float) -> dict:
    return {"n": 132, "epr": {"preserved": preserved, "swapped": swapped, "z": z},
            "expected_agreement": {"preserved": preserved / 2, "swapped": swapped / 2, "z": 2 * z}}


FOLD = {1: {"emodb/select_ua": 0.20, "emodb/test_ua": 0.30, "kept_epoch": 10, "en-de/test": separation(0.4, 0.2, 1.0)},
        2: {"emodb/select_ua": 0.30, "emodb/test_ua": 0.40, "kept_epoch": 20, "en-de/test": separation(0.2, 0.2, 3.0)}}


def test_seed_mean_averages_numbers_and_keeps_shared_counts():
    mean = ser_quality.seed_mean(FOLD)
    assert mean["emodb/select_ua"] == pytest.approx(0.25) and mean["kept_epoch"] == pytest.approx(15)
    assert mean["en-de/test"]["epr"]["z"] == pytest.approx(2.0)
    assert mean["en-de/test"]["expected_agreement"]["preserved"] == pytest.approx(0.15)
    assert mean["en-de/test"]["n"] == 132 and isinstance(mean["en-de/test"]["n"], int)


def test_loco_table_shows_the_mean_over_seeds_not_the_first_seed():
    results = {"loco:none": {"folds": {"emodb": FOLD}}}
    table = ser_quality.loco_markdown(results, "test")
    row = next(line for line in table.splitlines() if line.startswith("| none | emodb"))
    assert row == "| none | emodb | 0.350 | en-de (132) | 0.300 / 0.200 | 2.0 | 0.150 / 0.100 | 4.0 |"
