"""`emopres submit`: gate parsing and checking (pure), the HTTP client on a mock transport, and the exit
status against a running `emopres serve` (a real process on a free loopback port, a created token)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core.catalogue import METRICS
from emopres_client.client import (
    Client,
    ClientError,
    Gate,
    MaxDrop,
    check_gates,
    check_max_drops,
    parse_gate,
    parse_max_drop,
)
from tests.report_fixtures import make_report, make_rows
from tests.service_support import EMOPRES, REPO, ServiceProcess, free_port, service_env, wait_http, write_dataset

# ------------------------------------------------------------------------------------------ gate parsing


@pytest.mark.parametrize(
    "text, gate",
    [
        ("bar>=0.5", Gate("bar", "value", ">=", 0.5)),
        (" epr > 0.25 ", Gate("epr", "value", ">", 0.25)),
        ("kappa<=1", Gate("kappa", "value", "<=", 1.0)),
        ("EPR.ci_low>=0.2", Gate("epr", "ci_low", ">=", 0.2)),
        ("acoustic_sim.ci_high<-1e-3", Gate("acoustic_sim", "ci_high", "<", -0.001)),
        ("pause==0", Gate("pause", "value", "==", 0.0)),
    ],
)
def test_parse_gate(text, gate):
    assert parse_gate(text, METRICS) == gate


@pytest.mark.parametrize(
    "text, message",
    [
        ("bar", "is not a gate"),
        ("bar>=", "is not a gate"),
        (">=0.5", "is not a gate"),
        ("bar=>0.5", "is not a gate"),
        ("bar>=0.5x", "is not a gate"),
        ("bar.median>=0.5", "unknown field"),
        ("blue>=0.5", "unknown metric"),
        ("bar>=1.2.3", "not a number"),
        ("", "is not a gate"),
    ],
)
def test_parse_gate_refuses_with_a_clear_message(text, message):
    with pytest.raises(ValueError, match=message):
        parse_gate(text, METRICS)


@pytest.mark.parametrize(
    "text, drop",
    [
        ("bar=0.02", MaxDrop("bar", 0.02)),
        ("epr = 0", MaxDrop("epr", 0.0)),
        ("acoustic_sim=0.1:sig", MaxDrop("acoustic_sim", 0.1, True)),
    ],
)
def test_parse_max_drop(text, drop):
    assert parse_max_drop(text, METRICS) == drop


@pytest.mark.parametrize("text", ["bar", "bar=-0.1", "bar=x", "bar>=0.1", "nope=0.1", "bar=0.1:maybe"])
def test_parse_max_drop_refuses(text):
    with pytest.raises(ValueError):
        parse_max_drop(text, METRICS)


def test_check_gates_pass_fail_and_null_fails():
    report = make_report(make_rows(n=12, seed=1), n_bootstrap=50)
    epr = report["corpus"]["epr"]["value"]
    results = check_gates(
        report,
        [
            parse_gate(f"epr>={epr}"),
            parse_gate(f"epr>{epr}"),
            parse_gate("va_sim>=0"),
            parse_gate(f"epr.ci_low<={epr}"),
        ],
    )
    assert [r.passed for r in results] == [True, False, False, True]
    assert "needs > " in results[1].reason and "epr" in results[1].gate
    assert results[2].observed == "null" and "paper profile" in results[2].reason


def test_check_max_drops():
    comparison = {
        "metrics": {
            "bar": {"diff": -0.05, "p_value": 0.01},
            "epr": {"diff": -0.05, "p_value": 0.4},
            "kappa": {"diff": 0.2, "p_value": 0.001},
            "va_sim": {"diff": None, "reason": "run a: needs the paper profile"},
        }
    }
    results = check_max_drops(
        comparison,
        [
            MaxDrop("bar", 0.02),
            MaxDrop("bar", 0.1),
            MaxDrop("epr", 0.02, True),
            MaxDrop("bar", 0.02, True),
            MaxDrop("kappa", 0.0),
            MaxDrop("va_sim", 1),
        ],
    )
    assert [r.passed for r in results] == [False, True, True, False, True, False]
    assert "dropped 0.0500" in results[0].reason and "paper profile" in results[5].reason
    assert not check_max_drops(None, [MaxDrop("bar", 0.1)])[0].passed


def test_the_comparison_table_lines_up_for_any_metric_name_length():
    """Columns start at the same place on every row, for names far longer than the old fixed 12 characters; a null
    row keeps its reason in the last column."""
    from emopres_client.cli import format_comparison

    long_name = "expected_agreement_side_with_a_very_long_name_indeed"
    comparison = {
        "baseline_id": "b1",
        "n_shared": 10,
        "metrics": {
            "epr": {"baseline": 0.5, "job": 0.6, "diff": 0.1, "ci_low": -0.05, "ci_high": 0.25, "p_value": 0.2},
            long_name: {"baseline": 0.41, "job": 0.4, "diff": -0.01, "ci_low": -0.1, "ci_high": 0.08, "p_value": 0.8},
            "va_sim": {"diff": None, "reason": "not computed: both runs ran the lite profile"},
        },
    }
    text = format_comparison(comparison, ["epr", long_name, "va_sim"])
    rows = text.splitlines()[1:5]
    header, epr, long_row, va = rows
    assert header.split()[0] == "metric" and long_name in long_row
    for column in ("baseline", "job", "diff", "95% CI", "p"):
        start = header.index(column)
        for row in (epr, long_row):
            assert row[start - 1] == " " and row[start] != " ", (column, row)
    assert epr.index("+0.100") == long_row.index("-0.010") == header.index("diff")
    assert va.index("null") == header.index("diff") and va.endswith("not computed: both runs ran the lite profile")


# ------------------------------------------------------------------------------------------ client, mock transport


def test_upload_names_fields_by_manifest_path_and_retries_with_one_key(tmp_path):
    manifest = write_dataset(tmp_path, n_pairs=2, seconds=0.5)
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = request.read()
        seen.append((request.headers.get("Idempotency-Key"), request.headers.get("Authorization"), body))
        if len(seen) == 1:
            return httpx.Response(
                503,
                headers={"Retry-After": "0"},
                json={"error": {"code": "service_unavailable", "message": "busy", "details": {}}},
            )
        return httpx.Response(202, json={"id": "j1", "status": "queued"})

    progress = []
    with Client("http://emopres.test", "tok", transport=httpx.MockTransport(handler), sleep=lambda s: None) as client:
        created = client.submit(
            manifest,
            name="sys@abc",
            metadata={"commit": "abc"},
            on_upload=lambda sent, total: progress.append((sent, total)),
        )
    assert created == {"id": "j1", "status": "queued"}
    assert len(seen) == 2 and seen[0][0] == seen[1][0] and len(seen[0][0]) == 36  # one key for both tries
    assert seen[1][1] == "Bearer tok"
    body = seen[1][2]
    for field in (
        'name="manifest"',
        'name="audio/src0.wav"',
        'name="audio/tgt1.wav"',
        'name="name"',
        'name="metadata"',
    ):
        assert field.encode() in body
    assert body.count(b"RIFF") == 4
    total = manifest.stat().st_size + sum(f.stat().st_size for f in (tmp_path / "audio").iterdir())
    assert progress[-1] == (total, total)


def test_errors_carry_the_service_error_body(tmp_path):
    manifest = write_dataset(tmp_path, n_pairs=1, seconds=0.5)

    def handler(request):
        return httpx.Response(
            422, json={"error": {"code": "invalid_manifest", "message": "manifest: bad", "details": {"x": 1}}}
        )

    with Client("http://emopres.test", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ClientError) as caught:
            client.submit(manifest)
    assert (
        caught.value.status == 422 and caught.value.code == "invalid_manifest" and "manifest: bad" in str(caught.value)
    )
    (tmp_path / "audio" / "src0.wav").unlink()
    with Client("http://emopres.test", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ClientError, match="not found under"):
            client.submit(manifest)


def test_wait_polls_until_finished_and_times_out():
    states = iter(["queued", "running", "running", "succeeded"])

    def handler(request):
        return httpx.Response(200, json={"id": "j", "status": next(states), "progress": {"done": 0, "total": 2}})

    with Client("http://x", transport=httpx.MockTransport(handler), sleep=lambda s: None) as client:
        assert client.wait("j", poll=0.01)["status"] == "succeeded"
    now = [0.0]

    def tick(seconds):
        now[0] += seconds

    with Client(
        "http://x",
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"id": "j", "status": "running"})),
        sleep=tick,
    ) as client:
        with pytest.raises(ClientError, match="still running after 5 s"):
            client.wait("j", poll=1, timeout=5, clock=lambda: now[0])


# ------------------------------------------------------------------------------------------ against `emopres serve`


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_lite_head):
    data = tmp_path_factory.mktemp("service")
    env = service_env(data_dir=data, head=random_lite_head, bootstrap=100, chunk_size=4)
    command = [str(EMOPRES)] if EMOPRES.exists() else [sys.executable, "-m", "cli.main"]
    made = subprocess.run(
        command + ["tokens", "create", "ci"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    port = free_port()
    process = ServiceProcess(
        ["serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], env, data / "serve.log"
    ).start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", process)
        yield {"url": url, "token": token, "env": env, "process": process}
    finally:
        process.stop()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Two runs of the same pair ids: `baseline` (target = source: perfect similarity) and `system`."""
    root = tmp_path_factory.mktemp("data")
    system = write_dataset(root, n_pairs=3, seconds=1.0)
    with open(system, newline="") as handle:
        rows = list(csv.DictReader(handle))
    baseline = root / "baseline.csv"
    with open(baseline, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "target": row["source"]} for row in rows)
    return {"system": system, "baseline": baseline}


def submit(server, pairs: Path, *extra: str, token: str | None = "default") -> subprocess.CompletedProcess:
    """`emopres submit` as CI runs it: its own process, the token in the environment."""
    command = [str(EMOPRES)] if EMOPRES.exists() else [sys.executable, "-m", "cli.main"]
    env = dict(server["env"], EMOPRES_TOKEN=server["token"] if token == "default" else (token or ""))
    return subprocess.run(
        command + ["submit", str(pairs), "--server", server["url"], "--poll", "0.3", "--quiet", *extra],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def baseline(server, datasets, tmp_path_factory):
    """`emopres submit` of the baseline run, named system@base, with gates and --out: (its process, its report).
    Made once for the tests that need it, whichever of them runs first (or alone)."""
    out = tmp_path_factory.mktemp("baseline") / "report.json"
    done = submit(
        server,
        datasets["baseline"],
        "--name",
        "system@base",
        "--gate",
        "epr>=0",
        "--gate",
        "acoustic_sim.ci_low>=0.99",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done, json.loads(out.read_text())


def test_submit_passes_gates_and_writes_the_report(baseline):
    done, report = baseline
    assert report["job"]["status"] == "succeeded" and report["job"]["n_pairs"] == 3
    assert report["corpus"]["acoustic_sim"]["value"] == pytest.approx(1.0)  # target == source
    assert "PASS  epr>=0" in done.stdout and "signature:" in done.stdout and "epr" in done.stdout


def test_submit_exits_1_naming_the_failing_gates(server, datasets):
    done = submit(server, datasets["system"], "--gate", "epr>=0", "--gate", "epr>1.01", "--gate", "va_sim>=0.1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 gate(s) failed" in done.stderr
    assert "epr>1.01" in done.stderr and "va_sim>=0.1" in done.stderr and "needs the paper profile" in done.stderr
    assert "PASS  epr>=0" in done.stdout and "FAIL  epr>1.01" in done.stdout


def test_max_drop_against_a_baseline(server, datasets, baseline, tmp_path):
    baseline_id = baseline[1]["job"]["id"]
    comparison_out = tmp_path / "comparison.json"
    dropped = submit(
        server,
        datasets["system"],
        "--baseline",
        baseline_id,
        "--max-drop",
        "acoustic_sim=0.05",
        "--max-drop",
        "epr=1",
        "--comparison-out",
        str(comparison_out),
    )
    assert dropped.returncode == 1, dropped.stdout + dropped.stderr
    assert "max-drop acoustic_sim=0.05" in dropped.stderr and "max-drop epr" not in dropped.stderr
    comparison = json.loads(comparison_out.read_text())
    sim = comparison["metrics"]["acoustic_sim"]
    assert comparison["baseline_id"] == baseline_id and comparison["n_shared"] == 3
    assert sim["diff"] < -0.05 and sim["baseline"] == pytest.approx(1.0)
    assert "compared with baseline" in dropped.stdout
    tolerant = submit(server, datasets["system"], "--baseline-name", "system@base", "--max-drop", "acoustic_sim=3")
    assert tolerant.returncode == 0, tolerant.stdout + tolerant.stderr
    assert f"baseline: job {baseline_id} (system@base)" in tolerant.stderr


def test_submit_exits_2_on_service_errors(server, datasets, capsys, monkeypatch):
    from cli.main import main

    def run(*args, token="emopres_bad_token"):
        monkeypatch.setenv("EMOPRES_TOKEN", token)
        status = main(["submit", str(datasets["system"]), "--quiet", "--retries", "0", *args])
        return status, capsys.readouterr().err

    status, err = run("--server", server["url"], "--gate", "epr>=0")
    assert status == 2 and "401" in err and "invalid or revoked token" in err
    status, err = run("--server", server["url"], "--gate", "epr>>0")
    assert status == 2 and "is not a gate" in err
    status, err = run("--server", server["url"], "--max-drop", "bar=0.1")
    assert status == 2 and "--max-drop needs --baseline" in err
    status, err = run("--server", server["url"], "--baseline-name", "never-ran", token=server["token"])
    assert status == 2 and "no succeeded job named 'never-ran'" in err
    status, err = run("--server", f"http://127.0.0.1:{free_port()}")
    assert status == 2 and "cannot reach" in err
    monkeypatch.delenv("EMOPRES_SERVER", raising=False)
    status, err = run()
    assert status == 2 and "no server" in err
