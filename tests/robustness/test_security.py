"""Access and secrets (issue 7): tokens (hashed, constant-time, revocable from the CLI), caps from the
environment, no network fetching of any kind, models only from safe formats, request ids in logs,
no secrets in logs.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import os
import re
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text

from app.auth import create_token, verify_token
from app.main import create_app
from core.db import Token
from core.settings import Settings
from tests.service.test_service_api import assert_error, job_fields, service_settings
from tests.service_support import EMOPRES, REPO, free_port, service_env, wait_job, wav_bytes

SERVICE_PACKAGES = ("app", "worker", "models", "core")
# app/webhooks/delivery.py: POSTs job summaries to callback URLs on the operator's allow-list (its only request out);
# app/webhooks/callbacks.py: reads callback URLs with httpx.URL, the parser that sends them (it sends nothing)
CLIENT_MODULES = {"app/webhooks/delivery.py", "app/webhooks/callbacks.py"}


def cli(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(EMOPRES), *args], env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


# ---------------------------------------------------------------- tokens


def test_tokens_from_the_cli_work_and_revocation_takes_effect_at_once(tmp_path, random_lite_head):
    env = service_env(data_dir=tmp_path, head=random_lite_head)
    created = cli(env, "tokens", "create", "ci-bot", "--project", "team-x")
    token = created.stdout.strip()
    assert re.fullmatch(r"emopres_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", token)
    assert token not in created.stderr and "shown once" in created.stderr
    second = cli(env, "tokens", "create", "nightly").stdout.strip()
    assert cli(env, "tokens", "create", "ci-bot", check=False).returncode != 0  # names are unique

    app = create_app(service_settings(tmp_path, random_lite_head), start_worker=False)
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/v1", headers=headers).json()["project"] == "team-x"
        listing = cli(env, "tokens", "list").stdout
        key_id, secret = token.split("_")[1], token.split("_", 2)[2]
        assert "ci-bot" in listing and key_id in listing and "active" in listing
        with app.state.services.sessions() as session:
            stored = session.scalar(select(Token).where(Token.name == "ci-bot"))
            assert stored.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in listing and stored.secret_sha256 not in listing

        cli(env, "tokens", "revoke", "ci-bot")
        assert_error(client.get("/v1", headers=headers), 401, "unauthorized")  # no cache: the next request
        assert "revoked" in cli(env, "tokens", "list").stdout
        other = {"Authorization": f"Bearer {second}"}
        assert client.get("/v1/jobs", headers=other).status_code == 200
        cli(env, "tokens", "revoke", second.split("_")[1])  # by key id
        assert_error(client.get("/v1/jobs", headers=other), 401)
        missing = cli(env, "tokens", "revoke", "no-such-token", check=False)
        assert missing.returncode != 0 and "no token named" in missing.stderr


def test_a_token_is_checked_in_a_worker_thread_and_no_thread_is_taken_without_one(
    tmp_path, random_lite_head, monkeypatch
):
    """The principal and services dependencies are async (FastAPI would run a plain def in a worker thread: a
    thread hop per request); the token's database lookup still runs in a worker thread, never in the event loop."""
    import asyncio
    import inspect

    from app.plumbing import deps

    assert inspect.iscoroutinefunction(deps.get_principal) and inspect.iscoroutinefunction(deps.get_services)
    in_event_loop = []

    def verify(session, raw):
        try:
            asyncio.get_running_loop()
            in_event_loop.append(True)
        except RuntimeError:
            in_event_loop.append(False)
        return verify_token(session, raw)

    monkeypatch.setattr(deps, "verify_token", verify)
    app = create_app(service_settings(tmp_path, random_lite_head), start_worker=False)
    with TestClient(app) as client:
        with app.state.services.sessions() as session:
            token = create_token(session, "bot", "team-y")
        assert client.get("/v1", headers={"Authorization": f"Bearer {token}"}).json()["project"] == "team-y"
        assert_error(client.get("/v1", headers={"Authorization": "Bearer emopres_0_x"}), 401)
        assert_error(client.get("/v1"), 401)
    assert in_event_loop == [False, False]  # the request without a token never reached the database


def test_tokens_are_compared_in_constant_time(tmp_path, monkeypatch):
    """Every check hashes the presented secret and compares digests with hmac.compare_digest, once,
    whether or not the key id exists (no early exit that would time the key ids)."""
    import app.auth as auth
    from core.db import make_engine, make_session_factory, upgrade

    url = f"sqlite:///{tmp_path / 't.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    with sessions() as session:
        token = create_token(session, "t", "p")
    calls = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    key_id, secret = token.split("_")[1], token.split("_", 2)[2]
    presented = {
        "valid": token,
        "wrong secret": f"emopres_{key_id}_{'x' * 43}",
        "unknown key": f"emopres_{'0' * 16}_{secret}",
        "malformed": "not-a-token",
    }
    with sessions() as session:
        results = {name: verify_token(session, raw) for name, raw in presented.items()}
    assert results["valid"] is not None and results["valid"].project == "p"
    assert all(results[name] is None for name in presented if name != "valid")
    assert len(calls) == len(presented)
    assert all(re.fullmatch("[0-9a-f]{64}", a) and re.fullmatch("[0-9a-f]{64}", b) for a, b in calls)
    assert calls[2][1] == auth._DUMMY_HASH  # an unknown key id still costs one digest comparison


# ---------------------------------------------------------------- caps


def test_upload_caps_come_from_the_environment(tmp_path, random_lite_head, monkeypatch):
    for name in list(os.environ):
        if name.startswith("EMOPRES_"):
            monkeypatch.delenv(name)
    caps = {
        "MAX_UPLOAD_BYTES": 300_000,
        "MAX_FILE_BYTES": 50_000,
        "MAX_AUDIO_SECONDS": 1.5,
        "MAX_PAIRS": 2,
        "MAX_FILES": 5,
        "MAX_METADATA_BYTES": 100,
    }
    for name, value in {**caps, "DATA_DIR": tmp_path, "HEAD": random_lite_head, "AUTH_DISABLED": 1}.items():
        monkeypatch.setenv(f"EMOPRES_{name}", str(value))
    with TestClient(create_app(Settings(), start_worker=False)) as client:
        limits = client.get("/v1").json()["limits"]
        assert limits == {k.lower(): v for k, v in caps.items() if k != "MAX_METADATA_BYTES"}
        assert_error(client.post("/v1/jobs", **job_fields(source=wav_bytes(2.0))), 413, "file_too_large")
        assert_error(client.post("/v1/jobs", **job_fields(source=wav_bytes(1.6, rate=8000))), 422, "invalid_audio")
        assert_error(client.post("/v1/jobs", **job_fields(metadata='{"a": "' + "b" * 100 + '"}')), 413)
        body = client.post("/v1/jobs", files={"archive": ("a.zip", b"\0" * 310_000)})
        assert_error(body, 413, "payload_too_large")
    monkeypatch.setenv("EMOPRES_MAX_UPLOAD_BYTES", "0")
    with pytest.raises(ValueError):
        Settings()


# ---------------------------------------------------------------- no network, no pickles


def service_sources():
    for package in SERVICE_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative not in CLIENT_MODULES and "migrations" not in relative:
                yield relative, path.read_text()


NETWORK_MODULES = {
    "urllib.request",
    "urllib3",
    "requests",
    "httpx",
    "aiohttp",
    "http.client",
    "ftplib",
    "huggingface_hub",
    "modelscope",
    "torch.hub",
    "pycurl",
    "wget",
}


def test_the_service_code_fetches_nothing_from_the_network():
    """No HTTP/FTP client or model hub is imported by the service (app, worker, models); every
    transformers load is local_files_only. (Sockets: the database and broker drivers only.)"""
    offenders = []
    for relative, source in service_sources():
        for node in ast.walk(ast.parse(source)):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            offenders += [
                f"{relative}:{node.lineno} imports {n}"
                for n in names
                if any(n == m or n.startswith(m + ".") for m in NETWORK_MODULES)
            ]
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "from_pretrained":
                keywords = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
                owner = getattr(node.func.value, "id", "")
                if owner not in ("cls",) and not owner.startswith(
                    ("Emotion2Vec", "ValenceArousal", "SpeakerEncoder", "AutoPCP", "XlsrEncoder")
                ):
                    if keywords.get("local_files_only") is not True:
                        offenders.append(f"{relative}:{node.lineno} from_pretrained without local_files_only=True")
    assert not offenders, offenders


def test_models_and_heads_are_read_without_unpickling():
    """No pickle.load / joblib / np.load(allow_pickle=True); torch.load only in the guarded loader."""
    offenders = []
    for relative, source in service_sources():
        for number, line in enumerate(source.splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\bpickle\.loads?\(|\bjoblib\b|allow_pickle\s*=\s*True|\bdill\b|cloudpickle", code):
                offenders.append(f"{relative}:{number}: {line.strip()}")
            if "torch.load(" in code and relative != "models/runtime/batching.py":
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_a_pickled_head_is_refused_and_never_executed(tmp_path, random_lite_head):
    """A head folder whose weights file is a pickle carrying code: refused, the code never runs."""
    import pickle
    import shutil

    from safetensors import SafetensorError

    from models.runtime.batching import load_torch_file
    from models.ser.head import SerHead

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    head = tmp_path / "head"
    shutil.copytree(random_lite_head, head)
    (head / "head.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(SafetensorError, match="deserializing header"):  # safetensors reads no pickle
        SerHead.load(head)
    (tmp_path / "model.pt").write_bytes(pickle.dumps({"weights": Payload()}))
    with pytest.raises(ValueError, match="weights-only"):
        load_torch_file(tmp_path / "model.pt")
    assert not marker.exists()


def test_no_outbound_connection_while_a_job_is_evaluated(tmp_path, random_lite_head, monkeypatch):
    """The embedded service evaluates a job (and refuses URL paths) without opening any socket but loopback."""
    attempts = []
    real_connect = socket.socket.connect

    def connect(self, address):
        attempts.append(address)
        host = address[0] if isinstance(address, tuple) else ""
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"test: outbound connection to {address} refused")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            attempts.append(("dns", host))
            raise socket.gaierror(f"test: no name lookups ({host})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    app = create_app(service_settings(tmp_path, random_lite_head, auth_disabled=True, bootstrap=20))
    with TestClient(app) as client:
        for manifest in (
            "pair_id,source,target\na,http://203.0.113.7/s.wav,t.wav\n",
            "pair_id,source,target\na,s.wav,https://example.com/t.wav\n",
        ):
            assert_error(client.post("/v1/jobs", **job_fields(manifest)), 422, "invalid_manifest")
        job = wait_job(client, client.post("/v1/jobs", **job_fields()).json()["id"])
        assert job["status"] == "succeeded"
    assert [a for a in attempts if isinstance(a, tuple) and a[0] not in ("127.0.0.1", "::1")] == []


# ---------------------------------------------------------------- request ids, secrets in logs


def test_request_ids_are_echoed_and_logged(tmp_path, random_lite_head, caplog):
    caplog.set_level(logging.INFO, logger="emopres")
    with TestClient(
        create_app(service_settings(tmp_path, random_lite_head, auth_disabled=True), start_worker=False)
    ) as client:
        given = "ci-run-42.step:7"
        response = client.post("/v1/jobs", **job_fields(), headers={"X-Request-ID": given})
        assert response.status_code == 202 and response.headers["x-request-id"] == given
        job_id = response.json()["id"]
        lines = [r.getMessage() for r in caplog.records if f"request_id={given}" in r.getMessage()]
        assert any(line.startswith("POST /v1/jobs 202") for line in lines)
        assert any(job_id in line and "created" in line for line in lines)  # request id -> job id

        error = client.get("/v1/jobs/nope", headers={"X-Request-ID": "trace-404"})
        assert error.headers["x-request-id"] == "trace-404"
        assert any("404" in r.getMessage() and "request_id=trace-404" in r.getMessage() for r in caplog.records)

        generated = client.get("/healthz").headers["x-request-id"]
        assert re.fullmatch("[0-9a-f]{32}", generated)
        assert any(f"request_id={generated}" in r.getMessage() for r in caplog.records)

        for forged in ("x\x1b[31mred", "a b", "id\r", "x" * 129, "é"):
            response = client.get("/healthz", headers={"X-Request-ID": forged.encode("latin-1")})
            replaced = response.headers["x-request-id"]
            assert replaced != forged and re.fullmatch("[0-9a-f]{32}", replaced)
        assert not any("\x1b" in r.getMessage() for r in caplog.records)


def all_log_text(caplog) -> str:
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


@pytest.mark.services
def test_no_tokens_or_database_passwords_in_logs(postgres_url, tmp_path, random_lite_head, caplog):
    """Everything logged (DEBUG, every logger, SQLAlchemy's statements included) while a PostgreSQL URL
    holds a password and clients authenticate with tokens: neither the password nor a token shows."""
    password = f"pw-{uuid.uuid4().hex}"
    schema = f"emopres_secrets_test_{os.getpid()}"
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    secret_url = postgres_url.replace("postgres@", f"postgres:{password}@", 1)  # trust auth ignores it
    assert password in secret_url
    caplog.set_level(logging.DEBUG)
    try:
        settings = service_settings(
            tmp_path,
            random_lite_head,
            bootstrap=20,
            auto_migrate=True,
            database_url=f"{secret_url}?options=-csearch_path%3D{schema}",
        )
        app = create_app(settings)
        with TestClient(app) as client:
            with app.state.services.sessions() as session:
                token = create_token(session, "ci", "team")
            headers = {"Authorization": f"Bearer {token}"}
            job_id = client.post("/v1/jobs", **job_fields(), headers=headers).json()["id"]
            assert wait_job(client, job_id, headers=headers)["status"] == "succeeded"
            assert client.get(f"/v1/jobs/{job_id}/report", headers=headers).status_code == 200
            bad = token[:-4] + "AAAA"
            assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {bad}"}).status_code == 401
            assert client.get("/v1/jobs", headers={"Authorization": token}).status_code == 401  # no scheme
            assert client.get("/readyz").status_code in (200, 503)
        # and with the database away: its errors are logged, the URL's password is not
        away = secret_url.replace("127.0.0.1:5432", f"127.0.0.1:{free_port()}")
        with TestClient(
            create_app(service_settings(tmp_path / "away", random_lite_head, database_url=away), start_worker=False)
        ) as client:
            assert client.get("/v1/jobs", headers=headers).status_code == 503
            assert client.get("/readyz").status_code == 503
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()
    logged = all_log_text(caplog)
    assert "database unavailable" in logged and job_id in logged  # the logs did capture the service
    secret = token.split("_", 2)[2]
    for value in (password, token, secret, bad):
        assert value not in logged
