"""`emopres serve --workers N`: the schema is migrated once, before the API processes start, not by each."""

from sqlalchemy import create_engine, inspect

from cli.service import migrate_once_for_workers
from core.settings import Settings


def test_workers_leave_the_migration_to_the_parent(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOPRES_AUTO_MIGRATE", "1")  # restored after the test
    url = f"sqlite:///{tmp_path / 'emopres.db'}"
    settings = Settings(data_dir=tmp_path, database_url=url, broker_url="redis://127.0.0.1:6379/9")
    assert settings.should_migrate
    migrate_once_for_workers(settings)
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"alembic_version", "jobs", "pairs"} <= tables, tables
    # what each uvicorn worker process reads: no second migration racing the first
    assert not Settings(data_dir=tmp_path, database_url=url, broker_url="redis://127.0.0.1:6379/9").should_migrate
