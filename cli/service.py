"""`emopres serve`, `emopres worker`, `emopres db upgrade`, `emopres tokens create|revoke|list`.

All read their settings from the environment (EMOPRES_*; see core/settings.py).
"""

from __future__ import annotations

import logging
import sys

from emopres_client.cli import CommandError


def register(subparsers) -> None:
    serve = subparsers.add_parser("serve", help="run the REST service (embedded default: SQLite, in-process worker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes (only with EMOPRES_BROKER_URL; the embedded mode is one process)",
    )
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(handler=run_serve)

    worker = subparsers.add_parser("worker", help="run a Celery worker (needs EMOPRES_BROKER_URL)")
    worker.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="pool processes (default $EMOPRES_WORKER_CONCURRENCY or 1: one per GPU)",
    )
    worker.add_argument("--pool", default="prefork", choices=("prefork", "solo", "threads"))
    worker.add_argument("--log-level", default="info")
    worker.set_defaults(handler=run_worker)

    db = subparsers.add_parser("db", help="database schema (Alembic migrations)")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_commands.add_parser("upgrade", help="migrate EMOPRES_DATABASE_URL to the latest schema")
    db_upgrade.add_argument("--revision", default="head")
    db_upgrade.set_defaults(handler=run_db_upgrade)
    db_current = db_commands.add_parser("current", help="print the schema revision of the database")
    db_current.set_defaults(handler=run_db_current)

    tokens = subparsers.add_parser("tokens", help="API tokens (each belongs to one project)")
    token_commands = tokens.add_subparsers(dest="tokens_command", required=True)
    create = token_commands.add_parser("create", help="create a token and print it (once)")
    create.add_argument("name")
    create.add_argument("--project", help="project whose jobs the token sees (default: the token's name)")
    create.set_defaults(handler=run_tokens_create)
    revoke = token_commands.add_parser("revoke", help="revoke a token by name (or key id)")
    revoke.add_argument("name")
    revoke.set_defaults(handler=run_tokens_revoke)
    listing = token_commands.add_parser("list", help="list tokens (never their secrets)")
    listing.set_defaults(handler=run_tokens_list)
    secret = token_commands.add_parser(
        "webhook-secret",
        help="create or replace a token's webhook signing secret "
        "and print it (once); callbacks of its jobs are signed with it from now on",
    )
    secret.add_argument("name")
    secret.set_defaults(handler=run_tokens_webhook_secret)


def _settings():
    from pydantic import ValidationError

    from core.settings import Settings

    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(
            (f"EMOPRES_{'_'.join(map(str, e['loc'])).upper()}: " if e["loc"] else "") + e["msg"] for e in error.errors()
        )
        raise CommandError(f"invalid settings: {problems}") from None


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _sessions(settings, migrate: bool | None = None):
    from core.db import make_engine, make_session_factory, upgrade

    if settings.should_migrate if migrate is None else migrate:
        upgrade(settings.sqlalchemy_url)
    return make_session_factory(make_engine(settings.sqlalchemy_url))


def check_blob_store(settings) -> None:
    """Stop at start, saying what is wrong, when the audio store cannot be used (s3: no bucket, no or refused
    credentials, endpoint down); the fs and database stores need no check here."""
    if settings.blob_store != "s3":
        return
    from core.blobstore import BlobStore, BlobStoreUnavailable

    try:
        BlobStore.from_settings(settings).check()  # a client of its own: none is inherited by forked processes
    except BlobStoreUnavailable as error:
        raise CommandError(f"EMOPRES_BLOB_STORE=s3: {error}") from None


def migrate_once_for_workers(settings) -> None:
    """Upgrade the schema here, once, and tell the API processes not to: several migrating at once race on the
    version table and all but one fail to start."""
    import os

    if settings.should_migrate:
        from core.db import upgrade

        upgrade(settings.sqlalchemy_url)
    os.environ["EMOPRES_AUTO_MIGRATE"] = "0"  # inherited by uvicorn's worker processes


def run_serve(args) -> int:
    import uvicorn

    settings = _settings()
    _logging(args.log_level)
    if args.workers > 1 and settings.embedded:
        raise CommandError("--workers > 1 needs EMOPRES_BROKER_URL (the embedded queue lives in one process)")
    check_blob_store(settings)
    from app.plumbing.connections import uvicorn_options

    if args.workers > 1:
        migrate_once_for_workers(settings)
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            access_log=False,
            **uvicorn_options(settings),
        )
        return 0
    from app.main import create_app

    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        **uvicorn_options(settings),
    )
    return 0


def run_worker(args) -> int:
    settings = _settings()
    if settings.embedded:
        raise CommandError(
            "no broker configured: set EMOPRES_BROKER_URL (e.g. redis://localhost:6379/0); "
            "without one, `emopres serve` evaluates in-process"
        )
    check_blob_store(settings)
    if settings.should_migrate:
        from core.db import upgrade

        upgrade(settings.sqlalchemy_url)
    from worker.queue.celery_app import WORKER_NAME_PREFIX, app

    concurrency = args.concurrency or settings.worker_concurrency
    app.conf.worker_concurrency = concurrency  # each pool process sizes its thread pools from it
    app.worker_main(
        [
            "worker",
            "--loglevel",
            args.log_level.upper(),
            "--queues",
            settings.queue_name,
            "--concurrency",
            str(concurrency),
            "--pool",
            args.pool,
            "--hostname",
            f"{WORKER_NAME_PREFIX}{settings.profile}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


def run_db_upgrade(args) -> int:
    from core.db import upgrade

    settings = _settings()
    upgrade(settings.sqlalchemy_url, args.revision)
    print(f"database at {args.revision}: {settings.public()['database']}")
    return 0


def run_db_current(args) -> int:
    from core.db import current_revision, head_revision, make_engine

    settings = _settings()
    revision = current_revision(make_engine(settings.sqlalchemy_url))
    print(f"{revision or 'empty'} (code expects {head_revision()})")
    return 0 if revision == head_revision() else 1


def run_tokens_create(args) -> int:
    from app.auth import TokenError, create_token

    settings = _settings()
    from app.webhooks.callbacks import new_secret

    with _sessions(settings)() as session:
        try:
            token = create_token(session, args.name, args.project)
        except TokenError as error:
            raise CommandError(str(error)) from None
        secret = new_secret(session, _token_named(session, args.name))
    print(token)
    print(f"token {args.name!r} for project {(args.project or args.name)!r}: shown once, store it now", file=sys.stderr)
    print(
        f"webhook signing secret (shown once; your webhook receiver verifies X-Emopres-Signature with it): {secret}",
        file=sys.stderr,
    )
    return 0


def _token_named(session, name: str):
    from sqlalchemy import select

    from core.db import Token

    token = session.scalar(select(Token).where(Token.name == name.strip()))
    if token is None:
        raise CommandError(f"no token named {name!r}")
    return token


def run_tokens_webhook_secret(args) -> int:
    from app.webhooks.callbacks import new_secret

    with _sessions(_settings())() as session:
        secret = new_secret(session, _token_named(session, args.name))
    print(secret)
    print(
        f"webhook signing secret of token {args.name!r}: shown once, store it where your receiver reads it",
        file=sys.stderr,
    )
    return 0


def run_tokens_revoke(args) -> int:
    from app.auth import TokenError, revoke_token

    with _sessions(_settings())() as session:
        try:
            token = revoke_token(session, args.name)
        except TokenError as error:
            raise CommandError(str(error)) from None
    print(f"revoked {token.name} ({token.key_id})")
    return 0


def run_tokens_list(args) -> int:
    from app.auth import list_tokens

    with _sessions(_settings())() as session:
        tokens = list_tokens(session)
    print(f"{'name':<24} {'project':<20} {'key id':<17} {'created':<20} {'last used':<20} status")
    for t in tokens:
        print(
            f"{t.name:<24} {t.project:<20} {t.key_id:<17} {t.created_at:%Y-%m-%d %H:%M:%S}  "
            f"{(f'{t.last_used_at:%Y-%m-%d %H:%M:%S}' if t.last_used_at else '-'):<20} "
            f"{'revoked' if t.revoked_at else 'active'}"
        )
    return 0
