"""worker.queue's background loops: a round that raises (a bug, or the database away) is logged with its traceback,
so a bug does not read as an outage, and the loop goes on."""

from __future__ import annotations

import logging
import threading

from core.db import upgrade
from core.settings import Settings
from worker.queue import embedded, reconciler


def _failures(caplog, error: type) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "emopres.worker" and r.exc_info and r.exc_info[0] is error]


def test_a_raising_reconciler_round_is_logged_with_its_traceback_and_the_next_round_runs(monkeypatch, caplog):
    rounds, again = [], threading.Event()

    def reconcile(ctx, *, restart=False):
        rounds.append(restart)
        if len(rounds) == 1:
            raise KeyError("a bug")
        again.set()
        return {}

    monkeypatch.setattr(reconciler, "reconcile", reconcile)
    loop = reconciler.Reconciler(object(), interval=0.01, restart_first=True).start()
    try:
        assert again.wait(10)
    finally:
        loop.stop()
    assert len(_failures(caplog, KeyError)) == 1 and "Traceback" in caplog.text and "a bug" in caplog.text
    assert rounds[:2] == [True, True]  # the restart round that failed is run again


def test_a_raising_embedded_task_is_logged_with_its_traceback_and_the_worker_goes_on(tmp_path, monkeypatch, caplog):
    chunks, second = [], threading.Event()

    def run_chunk(ctx, job_id, idx):
        chunks.append(idx)
        if idx == 0:
            raise KeyError("a bug")
        second.set()

    monkeypatch.setattr(embedded, "run_chunk", run_chunk)
    settings = Settings(data_dir=tmp_path, database_url=None, broker_url=None, cache_dir=None)
    upgrade(settings.sqlalchemy_url)
    worker = embedded.EmbeddedQueue(settings).start(preload=False)
    try:
        worker.send_chunk("job", 0)
        worker.send_chunk("job", 1)
        assert second.wait(10)
    finally:
        worker.stop()
    assert chunks == [0, 1] and len(_failures(caplog, KeyError)) == 1 and "Traceback" in caplog.text
