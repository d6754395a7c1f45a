"""A full disk (ENOSPC) is a 507 insufficient_storage, not a 500, and leaves what is stored intact; a feature
cache that cannot be written is a cache miss (issue 26, item 7). ENOSPC is injected, the real disk is not filled."""

from __future__ import annotations

import errno
import logging
import os

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from starlette.datastructures import UploadFile

import core.blobstore
import core.feature_cache
from app.main import create_app
from core.db import Blob, Job, Pair
from core.settings import Settings
from emopres_client.pairs import PairSpec
from models.registry import ProfileSpec
from models.ser.head import SerHead
from tests.service_support import drop_postgres_schema, new_postgres_schema, upload_fields, write_dataset
from worker.engine.pipeline import Evaluator


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(params=["sqlite-fs", "postgres-fs", "postgres-database"])
def service(request, tmp_path, random_lite_head):
    database_url, schema = None, None
    blob_store = request.param.split("-")[1]
    if request.param.startswith("postgres"):
        schema = f"disk_full_{blob_store}"
        database_url = new_postgres_schema(request.getfixturevalue("postgres_url"), schema)
    settings = Settings(
        data_dir=tmp_path / "data",
        head=str(random_lite_head),
        bootstrap=0,
        database_url=database_url,
        broker_url=None,
        auth_disabled=True,
        blob_store=blob_store,
        auto_migrate=True,
    )
    app = create_app(settings, start_worker=False)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            client.services = app.state.services
            yield client
    finally:
        if schema:
            drop_postgres_schema(request.getfixturevalue("postgres_url"), schema)


def _stored(services) -> tuple[int, int, int, list]:
    with services.sessions() as session:
        counts = tuple(session.scalar(select(func.count()).select_from(table)) for table in (Job, Pair, Blob))
    root = services.blobs.files.root
    files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    return (*counts, files)


def _check_507(response) -> None:
    assert response.status_code == 507, response.text
    assert response.json()["error"]["code"] == "insufficient_storage"
    assert "Retry-After" in response.headers


@pytest.mark.parametrize("where", ["spool", "blob"])
def test_a_full_disk_is_a_507_and_stores_nothing(service, tmp_path, monkeypatch, where):
    manifest = write_dataset(tmp_path / "in", n_pairs=2, seconds=0.5)
    if where == "spool":  # the multipart parser spools uploaded files to a temporary file
        monkeypatch.setattr(UploadFile, "write", _disk_full)
    elif service.services.blobs.kind == "fs":  # the blob file's write
        monkeypatch.setattr(core.blobstore.os, "write", _disk_full)
    else:  # the database's own disk: the insert of the blob rows
        monkeypatch.setattr(core.blobstore.BlobStore, "_insert", staticmethod(_disk_full))
    before = _stored(service.services)
    _check_507(service.post("/v1/jobs", files=upload_fields(manifest)))
    assert _stored(service.services) == before  # no job, pair, blob row or file
    monkeypatch.undo()
    assert service.post("/v1/jobs", files=upload_fields(manifest)).status_code == 202  # space again: accepted


def test_a_feature_cache_that_cannot_be_written_is_a_miss(write_wav, tmp_path, random_lite_head, monkeypatch, caplog):
    for name in ("a", "b", "c"):
        write_wav(f"{name}.wav", seconds=1.2, seed=ord(name))
    monkeypatch.setattr(core.feature_cache.np, "savez", _disk_full)
    pairs = [PairSpec("p1", "a.wav", "b.wav"), PairSpec("p2", "b.wav", "c.wav")]
    head = SerHead.load(random_lite_head)
    with (
        caplog.at_level(logging.WARNING),
        Evaluator(ProfileSpec(), head, n_jobs=1, cache_dir=tmp_path / "cache") as evaluator,
    ):
        rows, failures = evaluator.evaluate_pairs(pairs, lambda name: str(tmp_path / name))
    assert failures == [] and [r["pair_id"] for r in rows] == ["p1", "p2"]
    assert "feature cache" in caplog.text
    assert not list((tmp_path / "cache").rglob("*.tmp"))
