"""The client a CI runner installs: `emopres submit` and `emopres jobs` with httpx as the only dependency.

* the package imports nothing of the service and nothing heavy (checked on its source);
* `submit` against a real server on loopback: progress as plain lines without a terminal, the first
  pull request's missing baseline skipped or failed as asked, `jobs list` by name prefix;
* (slow) the light distribution built from client/, installed into a fresh venv (pip's configured
  local wheels first; skipped when no index can serve httpx), runs `submit` against the server, and
  that venv has no torch, numpy or service package.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import httpx
import pytest

from app.auth import create_token
from app.main import create_app
from emopres_client import cli as client_cli
from emopres_client.progress import Progress
from tests.service.test_service_api import service_settings
from tests.service_support import REPO, serving, write_dataset

ALLOWED_THIRD_PARTY = {"httpx"}


def _stdlib() -> set[str]:
    return set(sys.stdlib_module_names)


def test_the_client_package_imports_only_the_standard_library_and_httpx():
    stdlib, problems = _stdlib(), []
    for path in sorted((REPO / "emopres_client").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                else []
            )
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib and top not in ALLOWED_THIRD_PARTY and top != "emopres_client":
                    problems.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert not problems, problems
    # the light distribution ships this very package (a link, not a copy)
    link = REPO / "client" / "emopres_client"
    assert link.is_symlink() and link.resolve() == (REPO / "emopres_client").resolve()


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_without_a_terminal_is_a_line_every_interval(tmp_path):
    clock, out = Clock(), open(tmp_path / "log", "w+")
    progress = Progress("evaluating", "pair", file=out, interval=5.0, clock=clock)
    assert progress.lines  # a file is not a terminal
    for second in range(21):
        clock.now = float(second)
        progress.update(second, 20, "running")
    progress.close()
    out.seek(0)
    lines = out.read().splitlines()
    assert "\r" not in "".join(lines)
    assert lines[0].startswith("evaluating: 0/20 pairs (0%)")
    assert lines[1] == "evaluating: 5/20 pairs (25%), 1.00 pairs/s, 5 s, running"
    assert len(lines) == 5 and lines[-1].startswith("evaluating: 20/20 pairs (100%)")


def test_progress_on_a_terminal_redraws_one_line(tmp_path):
    class Tty(list):
        def write(self, text):
            self.append(text)

        def flush(self):
            pass

        def isatty(self):
            return True

    tty, clock = Tty(), Clock()
    progress = Progress("uploading", "B", file=tty, clock=clock)
    for i in range(3):
        clock.now = i
        progress.update(1024 * i, 4096)
    progress.close()
    assert all(t.startswith("\r") for t in tty[:-1]) and tty[-1] == "\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_lite_head):
    app = create_app(service_settings(tmp_path_factory.mktemp("light"), random_lite_head))
    with serving(app) as url:
        with app.state.services.sessions() as session:
            token = create_token(session, "ci-light", "team-l")
        yield url, token


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("light-data"), n_pairs=2)


def _env(server) -> dict:
    url, token = server
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(EMOPRES_SERVER=url, EMOPRES_TOKEN=token)
    return env


def test_submit_first_pull_request_skips_or_fails_the_missing_baseline(server, manifest, capsys, monkeypatch):
    url, token = server
    monkeypatch.setenv("EMOPRES_SERVER", url)
    monkeypatch.setenv("EMOPRES_TOKEN", token)
    common = [
        str(manifest),
        "--gate",
        "epr>=0",
        "--max-drop",
        "epr=0.05",
        "--baseline-name",
        "sys@main",
        "--progress-interval",
        "0.5",
        "--poll",
        "0.2",
    ]
    assert client_cli.main(["submit", *common]) == 2  # the default: fail (as before)
    failed = capsys.readouterr()
    assert "no succeeded job named 'sys@main'" in failed.err and "--baseline-missing skip" in failed.err
    assert client_cli.main(["submit", *common, "--baseline-missing", "skip", "--name", "sys@pr-1"]) == 0
    skipped = capsys.readouterr()
    assert "SKIP  max-drop epr=0.05" in skipped.out and "PASS  epr>=0" in skipped.out
    assert "comparison and --max-drop gates skipped" in skipped.err
    # progress in a log: whole lines with done/total and a rate, no carriage-return redraws
    progress = [line for line in skipped.err.splitlines() if line.startswith("evaluating: ")]
    assert progress and "\r" not in skipped.err
    assert progress[-1].startswith("evaluating: 2/2 pairs (100%)") and "pairs/s" in progress[-1]
    # once main has a run, the same command compares with it and applies the gate
    assert client_cli.main(["submit", str(manifest), "--name", "sys@main", "--quiet", "--poll", "0.2"]) == 0
    capsys.readouterr()
    assert client_cli.main(["submit", *common, "--baseline-missing", "skip", "--quiet"]) == 0
    compared = capsys.readouterr()
    assert "compared with baseline" in compared.out and "PASS  max-drop epr=0.05" in compared.out
    assert client_cli.main(["jobs", "list", "--name-prefix", "sys@", "--oldest-first"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split("\t")[:3] == ["id", "name", "status"]
    assert [r.split("\t")[1] for r in rows[1:]] == ["sys@pr-1", "sys@main"]
    # a link for the pull request's comment: it opens the report page with no token
    job_id = rows[1].split("\t")[0]
    assert client_cli.main(["jobs", "share", job_id]) == 0
    link = json.loads(capsys.readouterr().out)
    assert set(link) == {"url", "expires_at"}
    page = httpx.get(link["url"], timeout=300)  # drawn on first view (seconds on a busy machine)
    assert page.status_code == 200 and "sys@pr-1" in page.text


def test_an_unknown_gate_metric_is_refused_before_the_upload(server, manifest, capsys, monkeypatch):
    url, token = server
    monkeypatch.setenv("EMOPRES_TOKEN", token)
    assert client_cli.main(["submit", str(manifest), "--server", url, "--gate", "baar>=0.5"]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'baar'" in err and "bar" in err and "job " not in err


def _light_venv(tmp_path: Path) -> Path:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(REPO / "client"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    python = target / "bin" / "python"
    wheel = next(wheels.glob("emopres_client-*.whl"))
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--timeout",
            "20",
            "--retries",
            "1",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if install.returncode != 0 and any(
        s in install.stderr
        for s in ("No matching distribution", "Could not find", "NewConnectionError", "Temporary failure")
    ):
        pytest.skip(f"no package index or local wheel can serve httpx here: {install.stderr.strip()[-300:]}")
    assert install.returncode == 0, install.stderr
    return target


@pytest.mark.slow
def test_light_install_in_a_fresh_venv_submits_against_the_service(server, manifest, tmp_path):
    target = _light_venv(tmp_path)
    python = target / "bin" / "python"
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True)
    installed = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert "emopres-client" in installed and "httpx" in installed
    assert not installed & {"torch", "numpy", "scipy", "fastapi", "sqlalchemy", "emopres", "celery", "tqdm"}
    # the venv's own site-packages only: nothing of this checkout or the project's environment is importable,
    # and neither is on its sys.path
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util as u, json, sys; print(json.dumps({"
            "'found': [m for m in ('app', 'worker', 'models', 'torch', 'numpy') if u.find_spec(m)], "
            "'path': sys.path}))",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(server),
    )
    assert probe.returncode == 0, probe
    seen = json.loads(probe.stdout)
    assert seen["found"] == [], seen
    outside = {Path(sysconfig.get_paths()["purelib"]).resolve(), REPO.resolve()}
    assert not outside & {Path(entry).resolve() for entry in seen["path"] if entry}, seen["path"]
    emopres = target / "bin" / "emopres"
    result = subprocess.run(
        [
            str(emopres),
            "submit",
            str(manifest),
            "--name",
            "light@1",
            "--gate",
            "epr>=0",
            "--poll",
            "0.2",
            "--progress-interval",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(server),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "PASS  epr>=0" in result.stdout and "evaluating: 2/2 pairs (100%)" in result.stderr
    jobs = subprocess.run(
        [str(emopres), "jobs", "list", "--name-prefix", "light@"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(server),
        timeout=120,
    )
    assert jobs.returncode == 0 and "light@1\tsucceeded" in jobs.stdout, jobs


def test_evaluate_progress_counts_files_in_plain_lines(capsys):
    from cli.evaluate import progress_bar

    with progress_bar(6, "evaluating") as bar:  # stderr is captured here: not a terminal
        for _ in range(6):
            bar.advance(1)
    err = capsys.readouterr().err
    assert bar.lines and "\r" not in err
    assert err.splitlines()[0].startswith("evaluating: 0/6 files (0%)")
    assert err.splitlines()[-1].startswith("evaluating: 6/6 files (100%)")
