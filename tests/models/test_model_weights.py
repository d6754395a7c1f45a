"""Which weights exactly: `emopres models fetch | lock | check`, the lock file, the licences, and the
report signature carrying every model file's hash. Downloads go to a hub on loopback
(tests/hub_server.py) that serves a tiny checkpoint in the Hugging Face hub's layout."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import warnings

import pytest

pytest.importorskip("transformers")
pytest.importorskip("funasr")
pytest.importorskip("huggingface_hub")

from cli.main import main  # noqa: E402
from models.runtime.weights_lock import LOCK_NAME, read_lock  # noqa: E402
from tests import paper_fixtures as fx  # noqa: E402
from tests.hub_server import LocalHub, Repo  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the loopback hub's commit (a test value, not a real revision)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fx.build_model_dir(tmp_path_factory.mktemp("paper_models"))


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check(capsys, folder, *extra) -> tuple[int, str]:
    status = main(["models", "check", "--model-dir", str(folder), *extra])
    return status, capsys.readouterr().out


# ----------------------------------------------------------------------------- licences (issue 15, point 6)


def test_check_names_the_valence_arousal_licence(model_dir, capsys):
    status, out = _check(capsys, model_dir)
    assert status == 0
    block = out.split("valence_arousal", 1)[1].split("speaker_wavlm_ecapa", 1)[0]
    assert "licence: CC BY-NC-SA 4.0" in block
    rows = {r["name"]: r for r in json.loads(_check(capsys, model_dir, "--json")[1])}
    assert rows["valence_arousal"]["licence"].startswith("CC BY-NC-SA 4.0")
    assert "read the model's page" in rows["emotion2vec_plus_large"]["licence"]  # not invented where not known


# ----------------------------------------------------------------------------- lock and check


def test_lock_records_every_file_and_check_catches_any_change(model_dir, tmp_path, capsys):
    folder = tmp_path / "models"
    shutil.copytree(model_dir, folder)
    status, out = _check(capsys, folder)
    assert status == 0 and f"no {LOCK_NAME}" in out  # nothing to verify yet: said, not failed

    assert main(["models", "lock", str(folder)]) == 0
    capsys.readouterr()
    lock = read_lock(folder)
    va = lock["models"]["valence_arousal"]
    assert va["source"] == {"kind": "local"} and va["revision"] is None  # hand-filled: no revision invented
    va_dir = folder / "wav2vec2-large-robust-12-ft-emotion-msp-dim"
    assert set(va["files"]) == {p.name for p in va_dir.iterdir()}
    assert va["files"]["config.json"]["sha256"] == _sha(va_dir / "config.json")
    assert lock["models"]["speaker_wavlm_ecapa"]["files"] == {
        "wavlm_large_finetune.pth": {
            "sha256": _sha(folder / "wavlm_large_finetune.pth"),
            "size": (folder / "wavlm_large_finetune.pth").stat().st_size,
        }
    }
    status, out = _check(capsys, folder)
    assert status == 0 and out.count("lock: matches (local)") == 5

    config = json.loads((va_dir / "config.json").read_text())
    config["final_dropout"] = 0.25  # a config change, not the weights: still another model
    (va_dir / "config.json").write_text(json.dumps(config))
    (folder / "emotion2vec_plus_large" / "notes.txt").write_text("mine")
    status, out = _check(capsys, folder)
    assert status == 1
    assert "lock: differs (local); changed: config.json" in out and "lock: differs (local); extra: notes.txt" in out
    rows = {r["name"]: r for r in json.loads(_check(capsys, folder, "--json")[1])}
    assert rows["valence_arousal"]["lock"]["changed"] == ["config.json"]
    assert "emopres models fetch valence_arousal" in rows["valence_arousal"]["hint"]

    (folder / "emotion2vec_plus_large" / "notes.txt").unlink()
    assert main(["models", "lock", str(folder), "valence_arousal"]) == 0  # re-lock on purpose
    assert _check(capsys, folder)[0] == 0


def test_report_signature_carries_the_weights_hashes(model_dir, tmp_path):
    from models.paper.profile import PaperProfile

    folder = tmp_path / "models"
    shutil.copytree(model_dir, folder)
    assert main(["models", "lock", str(folder)]) == 0
    before = PaperProfile.from_model_dir(folder)
    info = before.models_info()
    lock = read_lock(folder)
    for name, entry in info.items():
        assert entry["files_sha256"] == lock["models"][name]["digest"] and entry["lock"] == "matches"
    weights = [p for p in before.signature_parts() if p.startswith("weights:")]
    assert len(weights) == 1 and len(weights[0]) == len("weights:") + 12

    (folder / "wav2vec2-large-xlsr-53" / "preprocessor_config.json").write_text(
        (folder / "wav2vec2-large-xlsr-53" / "preprocessor_config.json").read_text().replace("16000", "16000 ")
    )
    after = PaperProfile.from_model_dir(folder)
    assert [
        p for p in after.signature_parts() if p.startswith("weights:")
    ] != weights  # same weights file, other folder
    assert after.models_info()["xlsr_53"]["lock"] == "differs"
    assert after.models_info()["emotion2vec_plus_large"] == info["emotion2vec_plus_large"]


# ----------------------------------------------------------------------------- fetch from a hub on loopback


@pytest.fixture
def hub(model_dir, monkeypatch):
    """emotion2vec_plus_large's tiny checkpoint on a loopback hub; its model.pt's first download is cut off."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 << 10)  # small chunks: a cut leaves a partial file
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    source = model_dir / "emotion2vec_plus_large"
    files = {p.name: p.read_bytes() for p in source.iterdir()}
    files["README.md"] = b"# not needed by emopres\n"
    assert len(files["model.pt"]) > 4 * (64 << 10)
    with LocalHub({"emotion2vec/emotion2vec_plus_large": Repo(COMMIT, files)}, cut_once={"model.pt"}) as server:
        yield server, files


def test_fetch_downloads_resumes_and_locks(hub, tmp_path, capsys):
    server, files = hub
    folder = tmp_path / "fetched"
    status = main(["models", "fetch", "emotion2vec_plus_large", "--model-dir", str(folder), "--endpoint", server.url])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    entry = folder / "emotion2vec_plus_large"
    for name in ("config.yaml", "model.pt", "tokens.txt", "configuration.json"):
        assert (entry / name).read_bytes() == files[name]
    assert not (entry / "README.md").exists()  # only what the model folder needs
    # resumed: the cut-off download continued with a range request from where it stopped
    ranges = [r for method, path, r in server.state.requests if method == "GET" and path.endswith("/model.pt") and r]
    assert len(ranges) == 1 and int(ranges[0].split("=")[1].rstrip("-")) > 0
    assert "Fetching 4 files" in captured.err and "100%" in captured.err  # the progress bar

    lock = read_lock(folder)["models"]["emotion2vec_plus_large"]
    assert lock["revision"] == COMMIT  # the commit the hub resolved "main" to, recorded, not typed in
    assert lock["source"] == {
        "kind": "huggingface",
        "repo_id": "emotion2vec/emotion2vec_plus_large",
        "endpoint": server.url,
        "requested_revision": "main",
    }
    assert {name: e["sha256"] for name, e in lock["files"].items()} == {
        name: hashlib.sha256(files[name]).hexdigest()
        for name in ("config.yaml", "model.pt", "tokens.txt", "configuration.json")
    }
    assert f"fetched  huggingface emotion2vec/emotion2vec_plus_large @ {COMMIT}" in captured.out

    status, out = _check(capsys, folder, "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["emotion2vec_plus_large"]["lock"]["status"] == "matches"
    assert rows["emotion2vec_plus_large"]["lock"]["revision"] == COMMIT


def test_fetch_from_the_modelscope_mirror_resumes_and_locks_its_source(model_dir, tmp_path, capsys):
    source = model_dir / "emotion2vec_plus_large"
    files = {p.name: p.read_bytes() for p in source.iterdir()}
    files["model.pt"] += bytes(3 << 20)  # room for a partial chunk before the cut (the client reads 1 MiB pieces)
    folder = tmp_path / "fetched"
    with LocalHub({"iic/emotion2vec_plus_large": Repo(COMMIT, files)}, cut_once={"model.pt"}) as server:
        status = main(
            [
                "models",
                "fetch",
                "emotion2vec_plus_large",
                "--source",
                "modelscope",
                "--model-dir",
                str(folder),
                "--endpoint",
                server.url,
            ]
        )
        requests = list(server.state.requests)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert (folder / "emotion2vec_plus_large" / "model.pt").read_bytes() == files["model.pt"]
    assert any(path.endswith("/repo") and r and int(r.split("=")[1].rstrip("-")) > 0 for _, path, r in requests)
    assert not any("/resolve/" in path for _, path, _ in requests)  # the mirror only, no Hugging Face
    lock = read_lock(folder)["models"]["emotion2vec_plus_large"]
    assert lock["source"] == {
        "kind": "modelscope",
        "repo_id": "iic/emotion2vec_plus_large",
        "endpoint": server.url,
        "requested_revision": "master",
    }
    assert lock["revision"] is None  # the ModelScope client does not say which commit it got: not invented
    assert lock["files"]["model.pt"]["sha256"] == hashlib.sha256(files["model.pt"]).hexdigest()
    status = main(["models", "fetch", "valence_arousal", "--source", "modelscope", "--model-dir", str(folder)])
    assert status == 2 and "no ModelScope mirror" in capsys.readouterr().err


def test_fetch_says_what_it_cannot_download(hub, tmp_path, capsys):
    server, _ = hub
    folder = tmp_path / "fetched"
    status = main(["models", "fetch", "valence_arousal", "--model-dir", str(folder), "--endpoint", server.url])
    assert status == 2 and "valence_arousal: download from huggingface failed" in capsys.readouterr().err
    status = main(
        [
            "models",
            "fetch",
            "emotion2vec_plus_large",
            "--revision",
            "v9",
            "--model-dir",
            str(folder),
            "--endpoint",
            server.url,
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and "failed" in err and "--source modelscope" in err  # the mirror is offered, not used silently
    assert read_lock(folder) is None
    status = main(
        [
            "models",
            "fetch",
            "speaker_wavlm_ecapa",
            "autopcp_comparator",
            "--model-dir",
            str(folder),
            "--endpoint",
            server.url,
        ]
    )
    out = capsys.readouterr().out
    assert status == 0 and "speaker_wavlm_ecapa: not on a model hub" in out and "emopres models lock" in out


def test_nothing_the_service_runs_imports_the_downloader():
    code = (
        "import sys, app.main, worker.queue.tasks, worker.engine.pipeline, models.paper.profile, models.registry, "
        "cli.models; "
        "app.main.create_app; bad = [m for m in ('cli.fetch', 'modelscope') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
