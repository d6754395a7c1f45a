"""`emopres evaluate` as a user runs it, on synthetic audio."""

import json

import pytest

from cli.main import main


@pytest.fixture
def corpus(write_wav, tmp_path):
    for i in range(6):
        write_wav(f"audio/src{i}.wav", seconds=1.5 + 0.2 * i, seed=i, pitch=100 + 20 * i)
        write_wav(f"audio/tgt{i}.flac", seconds=1.8 + 0.1 * i, seed=10 + i, pitch=120 + 15 * i, rate=22_050, channels=2)
    lines = ["pair_id,source,target,label,speaker"]
    lines += [
        f"p{i},audio/src{i}.wav,audio/tgt{i}.flac,{['joy', 'anger', 'sadness'][i % 3]},s{i % 3}" for i in range(6)
    ]
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def run(args, capsys):
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_report_has_the_designed_shape(corpus, random_lite_head, capsys):
    out = corpus / "report.json"
    status, stdout, _ = run(
        [
            "evaluate",
            str(corpus / "pairs.csv"),
            "--out",
            str(out),
            "--head",
            str(random_lite_head),
            "--bootstrap",
            "200",
            "--jobs",
            "1",
            "--no-cache",
            "--group-column",
            "speaker",
        ],
        capsys,
    )
    assert status == 0
    report = json.loads(out.read_text())
    assert report["schema_version"] == "1"
    assert set(report) == {"schema_version", "job", "signature", "models", "summary", "corpus", "pairs", "failures"}
    # 6 pairs: no side reading, so the summary reads the absolute Bhattacharyya coefficient and says why
    summary = report["summary"]
    assert summary["primary"]["metric"] == "bhattacharyya"
    assert {"primary_fallback", "few_pairs"} <= {w["code"] for w in summary["warnings"]}
    assert "primary: bhattacharyya" in stdout and "warning [few_pairs]" in stdout
    assert report["job"]["n_pairs"] == 6 and report["job"]["n_failed"] == 0
    assert (
        "profile:lite" in report["signature"]
        and "bs:200" in report["signature"]
        and "unit:group" in report["signature"]
    )
    assert [p["pair_id"] for p in report["pairs"]] == [f"p{i}" for i in range(6)]
    corpus_metrics = report["corpus"]
    for metric in ("bar", "epr", "kappa", "emo_sim", "va_sim", "vsim", "autopcp", "acoustic_sim", "pause", "rate"):
        entry = corpus_metrics[metric]
        assert set(entry) >= {"value", "ci_low", "ci_high", "n", "reason"}
        assert entry["value"] is not None or entry["reason"]  # never a silent null
    assert corpus_metrics["va_sim"]["value"] is None and "paper profile" in corpus_metrics["va_sim"]["reason"]
    assert "epr" in stdout and "signature:" in stdout
    # the shipped side head reads the same 7 classes: it is loaded, recorded, and says why 6 pairs are too few
    assert f"ser_side:{report['models']['ser_head_side']['sha256'][:12]}" in report["signature"]
    assert "at least 20 distinct source utterances" in corpus_metrics["epr_side"]["reason"]
    assert all("ser_input" not in p[side] for p in report["pairs"] for side in ("source", "target"))


def test_bad_audio_is_listed_and_the_rest_evaluated(corpus, random_lite_head, capsys):
    (corpus / "audio" / "src0.wav").write_bytes(b"RIFF....garbage")
    out = corpus / "report.json"
    status, _, stderr = run(
        [
            "evaluate",
            str(corpus / "pairs.csv"),
            "--out",
            str(out),
            "--head",
            str(random_lite_head),
            "--bootstrap",
            "0",
            "--jobs",
            "1",
            "--no-cache",
        ],
        capsys,
    )
    report = json.loads(out.read_text())
    assert status == 0 and report["job"]["n_failed"] == 1 and len(report["pairs"]) == 5
    assert report["failures"][0]["pair_id"] == "p0" and report["failures"][0]["side"] == "source"
    assert "1 pair(s) failed" in stderr


@pytest.mark.parametrize(
    "content, message",
    [
        ("pair_id,source\np0,a.wav\n", "missing column"),
        ("pair_id,source,target\np0,a,b\np0,c,d\n", "duplicate pair_id"),
    ],
)
def test_unusable_pairs_file_exits_2_with_one_message(tmp_path, content, message, capsys):
    (tmp_path / "pairs.csv").write_text(content)
    status, stdout, stderr = run(["evaluate", str(tmp_path / "pairs.csv")], capsys)
    assert status == 2 and message in stderr and stderr.count("\n") == 1 and stdout == ""


def test_missing_head_is_a_clear_error(corpus, tmp_path, capsys):
    status, _, stderr = run(["evaluate", str(corpus / "pairs.csv"), "--head", str(tmp_path / "nohead")], capsys)
    assert status == 2 and "not a SER head directory" in stderr


def test_every_pair_failing_exits_1(tmp_path, random_lite_head, capsys):
    (tmp_path / "pairs.csv").write_text("pair_id,source,target\np0,missing.wav,missing2.wav\n")
    status, stdout, _ = run(
        ["evaluate", str(tmp_path / "pairs.csv"), "--head", str(random_lite_head), "--jobs", "1", "--no-cache"], capsys
    )
    assert status == 1 and "failed: 1" in stdout


def test_validate_refuses_when_no_audio_can_be_read(tmp_path, random_lite_head, capsys):
    rows = ["pair_id,source,target_preserved,target_swapped,emotion"]
    rows += [f"p{i},s{i}.wav,tp{i}.wav,ts{i}.wav,joy" for i in range(4)]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    status, stdout, stderr = run(
        [
            "validate",
            str(tmp_path / "pairs.csv"),
            "--head",
            str(random_lite_head),
            "--jobs",
            "1",
            "--no-cache",
            "--bootstrap",
            "0",
        ],
        capsys,
    )
    assert status == 2 and "no audio file could be analysed" in stderr and "--audio-root" in stderr


def test_validate_ranks_simulated_systems(write_wav, tmp_path, random_lite_head, capsys):
    for i in range(8):
        write_wav(f"s{i}.wav", seconds=1.5, seed=i, pitch=100 + 10 * i)
        write_wav(f"tp{i}.wav", seconds=1.5, seed=i, pitch=100 + 10 * i)  # same audio: the emotion is kept
        write_wav(f"ts{i}.wav", seconds=1.5, seed=50 + i, pitch=260 - 10 * i)
    rows = ["pair_id,source,target_preserved,target_swapped,emotion"]
    rows += [f"p{i},s{i}.wav,tp{i}.wav,ts{i}.wav,{['joy', 'anger'][i % 2]}" for i in range(8)]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "validate.json"
    status, stdout, _ = run(
        [
            "validate",
            str(tmp_path / "pairs.csv"),
            "--head",
            str(random_lite_head),
            "--jobs",
            "1",
            "--no-cache",
            "--bootstrap",
            "0",
            "--out",
            str(out),
        ],
        capsys,
    )
    result = json.loads(out.read_text())
    assert status == 0 and result["n_failed"] == [0, 0, 0, 0, 0]
    assert result["metrics"]["acoustic_sim"]["values"][-1] == pytest.approx(1.0)  # rate 1: identical targets
    assert result["metrics"]["acoustic_sim"]["spearman"] == pytest.approx(1.0)
    assert "spearman" in stdout and "diff(1-0)" in stdout and "95% CI" in stdout
    # sensitivity: rate 1 (identical targets) against rate 0, over the same sources
    acoustic = result["metrics"]["acoustic_sim"]["sensitivity"]
    assert (
        acoustic["preserved"] == pytest.approx(1.0)
        and acoustic["preserved"] == result["metrics"]["acoustic_sim"]["values"][-1]
    )
    assert acoustic["swapped"] == pytest.approx(result["metrics"]["acoustic_sim"]["values"][0])
    assert acoustic["diff"] == pytest.approx(acoustic["preserved"] - acoustic["swapped"])
    assert "--bootstrap 0" in acoustic["reason"] and acoustic["z"] is None
    # a metric the profile cannot compute says so, not "fewer than 3 finite pairs"
    assert result["metrics"]["va_sim"]["reason"].startswith("needs the paper profile")


def test_validate_reports_the_side_reading_next_to_the_absolute_one(write_wav, tmp_path, random_lite_head, capsys):
    n = 24  # at least MIN_SIDE_UTTERANCES distinct files per side
    for i in range(n):
        write_wav(f"s{i}.wav", seconds=1.2, seed=i, pitch=90 + 7 * i)
        write_wav(f"tp{i}.wav", seconds=1.2, seed=i, pitch=90 + 7 * i)
        write_wav(f"ts{i}.wav", seconds=1.2, seed=100 + i, pitch=260 - 5 * i)
    rows = ["pair_id,source,target_preserved,target_swapped,emotion"]
    rows += [f"p{i},s{i}.wav,tp{i}.wav,ts{i}.wav,{['joy', 'anger', 'sadness'][i % 3]}" for i in range(n)]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "validate.json"
    status, stdout, _ = run(
        [
            "validate",
            str(tmp_path / "pairs.csv"),
            "--head",
            str(random_lite_head),
            "--jobs",
            "1",
            "--no-cache",
            "--bootstrap",
            "200",
            "--rates",
            "0,0.5,1",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert status == 0
    result = json.loads(out.read_text())
    assert "ser_side:" in result["signature"] and "ser_side:none" not in result["signature"]
    epr_side = result["metrics"]["epr_side"]
    assert epr_side["values"][-1] == pytest.approx(1.0)  # rate 1: identical files on both sides read alike
    assert epr_side["sensitivity"]["diff"] == pytest.approx(1.0 - epr_side["values"][0])
    assert epr_side["sensitivity"]["z"] is not None
    assert any(line.startswith("epr_side ") for line in stdout.splitlines())
    status, stdout, _ = run(
        [
            "validate",
            str(tmp_path / "pairs.csv"),
            "--head",
            str(random_lite_head),
            "--jobs",
            "1",
            "--no-cache",
            "--bootstrap",
            "0",
            "--rates",
            "0,0.5,1",
            "--side-head",
            "none",
            "--out",
            str(out),
        ],
        capsys,
    )
    result = json.loads(out.read_text())
    assert "ser_side:none" in result["signature"]
    assert "no side-normalised SER head" in result["metrics"]["epr_side"]["reason"]


def test_a_speaker_group_column_normalises_each_speaker_on_its_own(write_wav, tmp_path, random_lite_head, capsys):
    n = 44  # two speakers with 22 distinct files each, per side (MIN_SIDE_UTTERANCES is 20)
    for i in range(n):
        higher = 120 if i % 2 else 0  # speaker b's voice is higher on both sides
        write_wav(f"s{i}.wav", seconds=1.0, seed=i, pitch=90 + 2 * i + higher)
        write_wav(f"t{i}.wav", seconds=1.0, seed=200 + i, pitch=150 - 2 * i + higher)
    rows = ["pair_id,source,target,label,speaker"]
    rows += [f"p{i},s{i}.wav,t{i}.wav,{['joy', 'anger', 'sadness'][i % 3]},{'ab'[i % 2]}" for i in range(n)]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    reports = {}
    for name, extra in (("grouped", []), ("whole", ["--group-column", "none"])):  # a speaker column by default
        out = tmp_path / f"{name}.json"
        status, _, _ = run(
            [
                "evaluate",
                str(tmp_path / "pairs.csv"),
                "--out",
                str(out),
                "--head",
                str(random_lite_head),
                "--bootstrap",
                "0",
                "--jobs",
                "1",
                "--cache-dir",
                str(tmp_path / "cache"),
                *extra,
            ],
            capsys,
        )
        assert status == 0
        reports[name] = json.loads(out.read_text())
    grouped, whole = reports["grouped"], reports["whole"]
    assert grouped["models"]["ser_head_side"]["normalised_per"] == {"source": "group", "target": "group"}
    assert whole["models"]["ser_head_side"]["normalised_per"] == {"source": "side", "target": "side"}
    assert "@source=group,target=group|" in grouped["signature"] and "@" not in whole["signature"]
    assert grouped["corpus"]["epr_side"]["value"] is not None
    # per-speaker statistics read the higher voice differently; the absolute reading is the same
    assert [p["source"]["probs_side"] for p in grouped["pairs"]] != [p["source"]["probs_side"] for p in whole["pairs"]]
    assert [p["source"]["pred"] for p in grouped["pairs"]] == [p["source"]["pred"] for p in whole["pairs"]]
