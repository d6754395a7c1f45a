"""MELD-ST adapter and `emopres reproduce meld-st --profile lite` on a miniature MELD-ST folder.

The miniature has MELD-ST's layout, CSV columns and split names (train / valid -> dev / test), with
real speech: English from RAVDESS, "Japanese dubbing" from JVNV (../shared/data), cut to 2.5 s
and converted to WAV in a temporary folder (never committed). A few files are tiny (< 1 kB) or
absent, so the adapter's skips and counts can be checked exactly.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from cli.main import main
from tests.conftest import read_csv
from worker.research.datasets.meld_st import MIN_BYTES, MeldStError, read_meld_st
from worker.research.tables import BALANCINGS, PUBLISHED_TABLE1, TABLE1_COLUMNS, TABLE1_ROWS, TABLE2_COLUMNS

EMOTIONS = ("joy", "anger", "sadness")
PER_CLASS = {"train": 4, "valid": 2, "test": 3}  # rows per emotion in each CSV
FOLDER = {"train": "train", "valid": "dev", "test": "test"}
# (csv split, row index, language) -> what the file is instead of real speech
DAMAGE = {
    ("train", 1, "ENG"): "tiny",
    ("train", 5, "JPN"): "tiny",
    ("valid", 3, "JPN"): "absent",
    ("test", 0, "JPN"): "tiny",
    ("test", 4, "ENG"): "tiny",
}
SPEAKERS = ("Chandler", "Monica", "Ross", "Rachel", "Joey", "Phoebe")
COLUMNS = [
    "id",
    "dia_id",
    "utt_id",
    "emotion",
    "sentiment",
    "English",
    "Japanese",
    "season",
    "episode",
    "speaker",
    "English_begin_time",
    "English_end_time",
    "Japanese_begin_time",
    "Japanese_end_time",
]
SENTIMENT = {"joy": "positive", "anger": "negative", "sadness": "negative"}


def _write_wav(source: Path, destination: Path, seconds: float = 2.5) -> None:
    wave, rate = soundfile.read(source, dtype="float32")
    destination.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(destination, wave[: int(seconds * rate)], rate, subtype="PCM_16")


def _write_tiny(destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(destination, np.zeros(200, np.float32), 16_000, subtype="PCM_16")  # 444 bytes
    assert destination.stat().st_size < 1000


@pytest.fixture(scope="module")
def meld_root(shared_data, tmp_path_factory) -> Path:
    """MELD-ST/ENG_JPN with jpn_{train,valid,test}.csv and ENG|JPN/{train,dev,test}/{split}_{id}.wav."""
    english = {
        e: [r for r in read_csv(shared_data / "ravdess" / "manifest.csv") if r["emotion"] == e] for e in EMOTIONS
    }
    japanese = {e: [r for r in read_csv(shared_data / "jvnv" / "manifest.csv") if r["emotion"] == e] for e in EMOTIONS}
    root = tmp_path_factory.mktemp("meld") / "MELD-ST"
    pair = root / "ENG_JPN"
    used = {e: 0 for e in EMOTIONS}
    for csv_split, per_class in PER_CLASS.items():
        folder = FOLDER[csv_split]
        rows = []
        for index in range(per_class * len(EMOTIONS)):
            emotion = EMOTIONS[index % len(EMOTIONS)]
            k = used[emotion]
            used[emotion] += 1
            utterance_id = str(100 * len(csv_split) + index)  # ids are not row numbers
            rows.append(
                {
                    "id": utterance_id,
                    "dia_id": str(index // 2),
                    "utt_id": str(index % 2),
                    "emotion": emotion,
                    "sentiment": SENTIMENT[emotion],
                    "English": f'Oh, "{emotion}"!\nReally, {index}?',
                    "Japanese": f"えっ、本当に{index}?",
                    "season": "3",
                    "episode": str(index % 7 + 1),
                    "speaker": SPEAKERS[index % len(SPEAKERS)],
                    "English_begin_time": f"00:0{index % 10}:01,000",
                    "English_end_time": f"00:0{index % 10}:03,500",
                    "Japanese_begin_time": f"00:0{index % 10}:01,100",
                    "Japanese_end_time": f"00:0{index % 10}:03,600",
                }
            )
            for language, source in (
                ("ENG", shared_data / "ravdess" / english[emotion][k]["path"]),
                ("JPN", shared_data / "jvnv" / japanese[emotion][k]["path"]),
            ):
                path = pair / language / folder / f"{folder}_{utterance_id}.wav"
                damage = DAMAGE.get((csv_split, index, language))
                if damage == "tiny":
                    _write_tiny(path)
                elif damage is None:
                    _write_wav(source, path)
        with (pair / f"jpn_{csv_split}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return root


def _file(split: str, index: int, language: str) -> str:
    folder = FOLDER[split]
    return f"{language}/{folder}/{folder}_{100 * len(split) + index}.wav"


EXPECTED_COUNTS = {
    "train": {
        "rows": 12,
        "ENG": {"ok": 11, "small": 1, "missing": 0},
        "JPN": {"ok": 11, "small": 1, "missing": 0},
        "pairs": 10,
    },
    "dev": {
        "rows": 6,
        "ENG": {"ok": 6, "small": 0, "missing": 0},
        "JPN": {"ok": 5, "small": 0, "missing": 1},
        "pairs": 5,
    },
    "test": {
        "rows": 9,
        "ENG": {"ok": 8, "small": 1, "missing": 0},
        "JPN": {"ok": 8, "small": 1, "missing": 0},
        "pairs": 7,
    },
    "total": {
        "rows": 27,
        "ENG": {"ok": 25, "small": 2, "missing": 0},
        "JPN": {"ok": 24, "small": 2, "missing": 1},
        "pairs": 22,
    },
}


# --------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------


def test_adapter_counts_and_skips_exactly(meld_root, tmp_path, capsys):
    out = tmp_path / "dataset"
    assert main(["datasets", "meld-st", "--root", str(meld_root), "--pair", "ENG_JPN", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "4 file(s) under 1024 bytes skipped" in stdout and "1 file(s) missing" in stdout
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["counts"] == EXPECTED_COUNTS
    assert summary["skipped_small"] == {
        "ENG": [_file("train", 1, "ENG"), _file("test", 4, "ENG")],
        "JPN": [_file("train", 5, "JPN"), _file("test", 0, "JPN")],
    }
    assert summary["missing"] == {"ENG": [], "JPN": [_file("valid", 3, "JPN")]}
    assert summary["csv_files"] == {"train": "jpn_train.csv", "dev": "jpn_valid.csv", "test": "jpn_test.csv"}
    assert summary["missing_columns"] == []
    assert Path(summary["audio_root"]) == meld_root / "ENG_JPN"

    pairs = read_csv(out / "pairs.csv")
    assert len(pairs) == 22 and [len(read_csv(out / f"pairs_{s}.csv")) for s in ("train", "dev", "test")] == [10, 5, 7]
    test_pairs = read_csv(out / "pairs_test.csv")
    assert [p["pair_id"] for p in test_pairs] == [f"test_{400 + i}" for i in (1, 2, 3, 5, 6, 7, 8)]
    first = test_pairs[0]
    assert first["source"] == _file("test", 1, "ENG") and first["target"] == _file("test", 1, "JPN")
    assert first["label"] == "anger" and first["group"] == "test:0" and first["speaker"] == "Monica"
    for row in pairs:  # every listed file is there, at least 1 kB, relative to the pair folder
        for side in ("source", "target"):
            assert (meld_root / "ENG_JPN" / row[side]).stat().st_size >= MIN_BYTES

    for language, n in (("eng", 25), ("jpn", 24)):
        manifest = read_csv(out / f"ser_{language}.csv")
        assert len(manifest) == n
        assert {r["split"] for r in manifest} == {"train", "dev", "test"}
        assert [sum(r["split"] == s for r in manifest) for s in ("train", "dev", "test")] == [
            EXPECTED_COUNTS[s][language.upper()]["ok"] for s in ("train", "dev", "test")
        ]
        assert {r["language"] for r in manifest} == {language.upper()}


def test_manifests_load_as_ser_training_data(meld_root, tmp_path):
    from models.ser.training import load_manifest
    from worker.research.datasets.meld_st import write_dataset

    corpus = read_meld_st(meld_root, "eng_jpn")  # the pair name is case-insensitive
    write_dataset(corpus, tmp_path)
    dataset = load_manifest(tmp_path / "ser_jpn.csv", corpus.pair_dir, corpus="JPN")
    assert dataset.counts()["train"] == {"anger": 4, "joy": 4, "sadness": 3}
    assert dataset.counts()["dev"] == {"anger": 2, "joy": 1, "sadness": 2}
    assert all(path.is_file() for path in dataset.paths)


def test_the_1kb_boundary_and_the_pair_folder_as_root(tmp_path):
    pair = tmp_path / "ENG_DEU"
    header = ",".join(["id", "dia_id", "utt_id", "emotion", "sentiment", "English", "German", "speaker"])
    for csv_split, folder in (("train", "train"), ("valid", "dev"), ("test", "test")):
        (pair / f"deu_{csv_split}.csv").parent.mkdir(parents=True, exist_ok=True)
        (pair / f"deu_{csv_split}.csv").write_text(
            f'{header}\n0,0,0,Joy,positive,Hi,Hallo,Ross\n1,0,1,fear,negative,"No, no","Nein, nein",Ross\n'
        )
        for language in ("ENG", "DEU"):
            for utterance_id, size in ((0, MIN_BYTES - 1), (1, MIN_BYTES)):
                path = pair / language / folder / f"{folder}_{utterance_id}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"\0" * size)
    corpus = read_meld_st(pair, "ENG_DEU")  # --root may be the pair folder itself
    counts = corpus.counts()
    assert counts["test"] == {
        "rows": 2,
        "ENG": {"ok": 1, "small": 1, "missing": 0},
        "DEU": {"ok": 1, "small": 1, "missing": 0},
        "pairs": 1,
    }
    assert [r.emotion for r in corpus.rows[:2]] == ["joy", "fear"]  # labels lower-cased
    assert "German_begin_time" in corpus.missing_columns  # reported, not needed
    assert read_meld_st(pair, "ENG_DEU", min_bytes=MIN_BYTES - 1).counts()["total"]["pairs"] == 6


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda pair: (pair / "jpn_valid.csv").unlink(), "jpn_valid.csv not found"),
        (lambda pair: (pair / "jpn_test.csv").write_text("id,utt_id,emotion\n1,0,joy\n"), "no dia_id column"),
        (
            lambda pair: (pair / "jpn_test.csv").write_text("id,dia_id,utt_id,emotion\n1,0,0,joy\n1,0,1,joy\n"),
            "duplicate id '1'",
        ),
    ],
)
def test_unusable_folders_are_refused_with_one_message(tmp_path, capsys, damage, message):
    pair = tmp_path / "ENG_JPN"
    for csv_split in ("train", "valid", "test"):
        (pair / "ENG" / "train").mkdir(parents=True, exist_ok=True)
        (pair / f"jpn_{csv_split}.csv").write_text("id,dia_id,utt_id,emotion\n1,0,0,joy\n")
    (pair / "ENG" / "train" / "train_1.wav").write_bytes(b"\0" * 2048)
    (pair / "JPN" / "train").mkdir(parents=True)
    (pair / "JPN" / "train" / "train_1.wav").write_bytes(b"\0" * 2048)
    damage(pair)
    status = main(["datasets", "meld-st", "--root", str(tmp_path), "--pair", "ENG_JPN", "--out", str(tmp_path / "o")])
    assert status == 2 and message in capsys.readouterr().err


def test_no_audio_at_all_is_an_error_not_an_empty_dataset(tmp_path):
    pair = tmp_path / "ENG_JPN"
    pair.mkdir()
    for csv_split in ("train", "valid", "test"):
        (pair / f"jpn_{csv_split}.csv").write_text("id,dia_id,utt_id,emotion\n1,0,0,joy\n")
    with pytest.raises(MeldStError, match="no ENG audio found"):
        read_meld_st(tmp_path, "ENG_JPN")


# --------------------------------------------------------------------------------------------
# reproduce --profile lite, end to end
# --------------------------------------------------------------------------------------------


def _table(stdout: str, title: str) -> tuple[list[str], list[list[str]]]:
    """The markdown table printed after the line starting with `title`: header cells, row cells."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    table = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif table:
            break
    assert table and set("".join(table[1])) <= set("-"), "a markdown table with a header rule"
    return table[0], table[2:]


NUMBER = re.compile(r"^-?\d+\.\d{3}$")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("features")


def _reproduce(meld_root, out, cache, capsys, *extra):
    status = main(
        [
            "reproduce",
            "meld-st",
            "--root",
            str(meld_root),
            "--pair",
            "ENG_JPN",
            "--profile",
            "lite",
            "--out",
            str(out),
            "--bootstrap",
            "200",
            "--jobs",
            "1",
            "--cache-dir",
            str(cache),
            *extra,
        ]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return captured.out


def test_reproduce_lite_prints_both_tables_and_writes_figures(meld_root, tmp_path, cache, capsys):
    out = tmp_path / "run"
    stdout = _reproduce(meld_root, out, cache, capsys)

    header, rows = _table(stdout, "Table 1.")
    assert header == list(TABLE1_COLUMNS)
    assert [r[0] for r in rows] == [name for name, _ in TABLE1_ROWS]
    assert all(len(r) == len(TABLE1_COLUMNS) for r in rows)
    by_metric = {r[0]: r for r in rows}
    for name in ("emo-sim", "va-sim", "autoPCP", "Vsim"):  # the lite profile has no such models: n/a, explained
        assert by_metric[name][1] == "n/a"
        assert f"{name}: needs the paper profile" in stdout
    assert NUMBER.match(by_metric["EPR"][1]) and re.match(r"^\[-?\d\.\d{3}, -?\d\.\d{3}\]$", by_metric["EPR"][2])
    for row, (_, metric) in zip(
        rows, TABLE1_ROWS, strict=True
    ):  # every published value beside this run's, with the difference
        assert NUMBER.match(row[1]) or row[1] == "n/a"
        assert row[3] == "" or row[3].isdigit()
        assert row[4] == PUBLISHED_TABLE1["ENG_JPN"][metric]
        if row[1] == "n/a":
            assert row[5] == "n/a"
        else:
            assert float(row[5]) == pytest.approx(float(row[1]) - float(row[4]), abs=1.5e-3) and row[5][0] in "+-"
    assert [
        by_metric[name][4] for name in ("BAR", "EPR", "kappa", "emo-sim", "va-sim", "autoPCP", "Vsim", "Pause", "Rate")
    ] == ["0.577", "0.216", "0.086", "0.890", "0.544", "1.75", "0.0034", "0.501", "-0.09"]
    assert "quoted by the paper from the MELD-ST paper" in stdout
    assert "7 pairs" in stdout and "of 5 dialogues" in stdout  # CIs resample the test dialogues

    header, rows = _table(stdout, "Table 2.")
    assert header == list(TABLE2_COLUMNS)
    assert [(r[0], r[1]) for r in rows] == [
        (language, BALANCINGS[b]) for language in ("English", "Japanese") for b in ("clustercentroids", "none")
    ]
    assert [row[6:8] for row in rows] == [
        ["0.483", "0.452"],
        ["0.454", "0.627"],
        ["0.277", "0.182"],
        ["0.176", "0.481"],
    ]
    for row in rows:
        assert all(NUMBER.match(cell) for cell in row[2:6])
        for run, paper, delta in ((row[4], row[6], row[8]), (row[5], row[7], row[9])):
            assert (
                delta == f"{float(run) - float(paper):+.3f}" or abs(float(delta) - (float(run) - float(paper))) < 1.5e-3
            )

    report = json.loads((out / "report.json").read_text())
    assert report["job"]["n_pairs"] == 7 and report["job"]["n_failed"] == 0
    assert [p["pair_id"] for p in report["pairs"]] == [f"test_{400 + i}" for i in (1, 2, 3, 5, 6, 7, 8)]
    assert report["corpus"]["bootstrap"]["unit"] == "group" and report["corpus"]["bootstrap"]["n_groups"] == 5
    assert "profile:lite" in report["signature"] and "bs:200" in report["signature"]
    epr = np.mean([p["source"]["pred"] == p["target"]["pred"] for p in report["pairs"]])
    assert report["corpus"]["epr"]["value"] == pytest.approx(epr) and by_metric["EPR"][1] == f"{epr:.3f}"
    for figure in (
        "fig1_confusion_source.png",
        "fig1_confusion_target.png",
        "fig2_uncertainty.png",
        "fig2_uncertainty_rescaled.png",
    ):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rescaled = json.loads((out / "plots" / "uncertainty_rescaled.json").read_text())  # Fig. 2 as nkululeko scales it
    default = json.loads((out / "plots" / "plots.json").read_text())["plots"]["uncertainty"]["data"]
    lowest = min(default["source_uncertainty"] + default["target_uncertainty"])
    assert rescaled["min_normalised_entropy"] == pytest.approx(lowest)
    assert rescaled["source_uncertainty"] == pytest.approx(
        [(u - lowest) / (1 - lowest) for u in default["source_uncertainty"]]
    )

    result = json.loads((out / "reproduce.json").read_text())
    assert result["dataset"]["counts"] == EXPECTED_COUNTS
    assert result["heads"] == "shared" and set(result["ser_training"]) == {"shared/clustercentroids", "shared/none"}
    test_rows = {(r["language"], r["balance"]): r for r in result["table2"]}
    assert test_rows[("ENG", "none")]["test_n"] == 8 and test_rows[("JPN", "none")]["test_n"] == 8
    assert test_rows[("JPN", "none")]["dev_n"] == 5
    # the class list: MELD's emotions present in training, in MELD order
    assert result["classes"] == ["anger", "joy", "sadness"]
    assert (out / "tables.md").read_text().startswith("Table 1.")


def test_reproduce_with_one_head_per_language(meld_root, tmp_path, cache, capsys):
    out = tmp_path / "per-language"
    stdout = _reproduce(meld_root, out, cache, capsys, "--ser-per-language", "--balance", "none")
    assert "one head per language" in stdout and "balancing none" in stdout
    _, rows = _table(stdout, "Table 2.")
    assert len(rows) == 4
    report = json.loads((out / "report.json").read_text())
    source, target = report["models"]["ser_head"], report["models"]["ser_head_target"]
    assert source["sha256"] != target["sha256"]
    assert f"ser:{source['sha256'][:12]}+{target['sha256'][:12]}" in report["signature"]
    assert sorted(p.name for p in (out / "ser").iterdir()) == ["eng", "jpn"]

    # the target side was predicted by the Japanese head, the source side by the English head
    from core.audio import load_audio_file
    from models.lite.profile import LiteProfile
    from models.ser.head import SerHead

    pair = report["pairs"][0]
    profile = LiteProfile()
    for side, language in (("source", "ENG"), ("target", "JPN")):
        wave = load_audio_file(meld_root / "ENG_JPN" / _file("test", 1, language))[0]
        features = profile.ser_input(profile.utterance_features([wave])[0])
        head = SerHead.load(out / "ser" / language.lower() / "none")
        assert pair[side]["probs"] == pytest.approx(
            dict(zip(head.classes, head.predict_proba(features)[0], strict=True)), abs=1e-6
        )


def test_reproduce_paper_profile_without_models_says_what_to_do(meld_root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EMOPRES_MODEL_DIR", raising=False)
    status = main(["reproduce", "meld-st", "--root", str(meld_root), "--pair", "ENG_JPN", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and "--model-dir" in err and "--profile lite" in err
