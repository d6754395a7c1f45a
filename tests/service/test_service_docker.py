"""docker-compose.yml (and its S3 variant docker-compose.s3.yml) and the Dockerfiles agree with the code (they
cannot run here: no Docker engine).

Every `emopres ...` command they name parses with the real CLI, every EMOPRES_* variable is a
setting, every copied path and Dockerfile exists, every extra is in pyproject, every URL path
they probe is a route, every service/volume they reference is declared.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from cli.main import build_parser
from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_S3 = REPO / "docker-compose.s3.yml"  # layered on docker-compose.yml (docker compose -f ... -f ...)
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        instruction, _, arguments = current.partition(" ")
        lines.append((instruction.upper(), arguments.strip()))
        current = ""
    return lines


def exec_form(arguments: str) -> list[str]:
    arguments = re.sub(r"^(--[\w-]+=\S+\s+)+", "", arguments)  # HEALTHCHECK options (--start-period=...)
    if arguments.startswith("CMD "):
        arguments = arguments[4:]
    return json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)


# the commands of the third-party images (postgres, redis): nothing of this repository to check them against
THIRD_PARTY_COMMANDS = {"pg_isready", "redis-server", "redis-cli", "minio", "mc"}


def check_command(argv: list[str]) -> None:
    """An emopres command must parse; a `python -c` probe must name real routes; `python -m` a real module; any
    other command must be one of the third-party images' (a command nothing here checks fails)."""
    if argv and argv[0] == "CMD":
        argv = argv[1:]
    assert argv, "an empty command"
    if argv[0] == "emopres":
        try:
            build_parser().parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"`{' '.join(argv)}` is not a valid emopres command")
    elif argv[0] in ("python", "python3") and "-c" in argv:
        paths = re.findall(r"https?://[^/'\"]+(/[\w/.-]*)", argv[argv.index("-c") + 1])
        assert paths, f"`{' '.join(argv)}` probes no URL of the app"
        for path in paths:
            assert path in app_routes(), f"{path} is not a route of the app"
    elif argv[0] in ("python", "python3") and "-m" in argv:
        import importlib.util

        assert importlib.util.find_spec(argv[argv.index("-m") + 1]) is not None
    else:
        assert argv[0] in THIRD_PARTY_COMMANDS, f"`{' '.join(argv)}`: a command this test does not check"


_ROUTES: set[str] = set()


def app_routes() -> set[str]:
    if not _ROUTES:
        from app.main import create_app

        _ROUTES.update(create_app(Settings(database_url="sqlite://")).openapi()["paths"])
    return _ROUTES


def setting_names() -> set[str]:
    return {f"EMOPRES_{name.upper()}" for name in Settings.model_fields}


def test_there_are_an_api_and_a_worker_dockerfile():
    assert {p.name for p in DOCKERFILES} >= {"api.Dockerfile", "worker.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_consistent_with_the_code(dockerfile):
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    instructions = dockerfile_instructions(dockerfile)
    assert instructions[0][0] == "FROM"
    commands = [name for name, _ in instructions]
    assert "CMD" in commands or "ENTRYPOINT" in commands
    copied = set()
    for name, arguments in instructions:
        if name == "COPY":
            *sources, _target = [a for a in shlex.split(arguments) if not a.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source}: not in the repository"
                copied.add(source.strip("/"))
        elif name in ("CMD", "ENTRYPOINT", "HEALTHCHECK"):
            check_command(exec_form(arguments))
        elif name == "ENV":
            for variable in re.findall(r"(EMOPRES_\w+)=", arguments):
                assert variable in setting_names(), f"{dockerfile.name}: {variable} is not a setting"
        elif name == "RUN":
            for requested in re.findall(r"\.\[([\w,]+)\]", arguments):
                assert set(requested.split(",")) <= extras, f"{dockerfile.name}: unknown extra in {requested}"
            for pin in re.findall(r"torch==([\w.+]+)", arguments):
                assert f'"torch=={pin}"' in (REPO / "pyproject.toml").read_text()
    # every top-level package the build ships is in the image before `pip install .` (the image would not import)
    shipped = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    missing = {pattern.rstrip("*") for pattern in shipped} - copied
    assert not missing, f"{dockerfile.name}: packages not copied: {sorted(missing)}"


def test_compose_runs_api_worker_redis_postgres(compose):
    services = compose["services"]
    assert {"api", "worker", "redis", "postgres"} <= set(services)
    assert services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["api"]["command"][:2] == ["emopres", "serve"]
    assert services["worker"]["command"][:2] == ["emopres", "worker"]
    migrations = [s for s in services.values() if s.get("command", [])[:3] == ["emopres", "db", "upgrade"]]
    assert migrations, "no service runs the migrations"


def check_services(services: dict, all_services: dict, declared_volumes: set[str]) -> None:
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (REPO / build.get("context", ".") / build["dockerfile"]).is_file(), f"{name}: no such Dockerfile"
        command = service.get("command")
        if command:
            command = command if isinstance(command, list) else shlex.split(command)
            check_command((service.get("entrypoint") or []) + command)
        test = (service.get("healthcheck") or {}).get("test")
        if test:
            check_command(test)
        for variable in service.get("environment") or {}:
            if variable.startswith("EMOPRES_"):
                assert variable in setting_names(), f"{name}: {variable} is not a setting"
        for dependency in service.get("depends_on") or {}:
            assert dependency in all_services, f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if not source.startswith((".", "/", "$")):
                assert source in declared_volumes, f"{name}: volume {source} is not declared"


def test_compose_is_consistent_with_the_code(compose):
    services = compose["services"]
    check_services(services, services, set(compose.get("volumes") or {}))
    environment = services["api"]["environment"]
    assert environment["EMOPRES_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert environment["EMOPRES_BROKER_URL"].startswith("redis://")
    # api and workers must see the same audio: a shared volume, or blobs in the database
    if environment.get("EMOPRES_BLOB_STORE", "fs") == "fs":
        data_volume = {
            v.split(":")[0] for v in services["api"]["volumes"] if v.split(":")[1] == environment["EMOPRES_DATA_DIR"]
        }
        assert data_volume and data_volume <= {v.split(":")[0] for v in services["worker"]["volumes"]}


def test_compose_s3_variant_is_consistent_with_the_code(compose):
    """docker-compose.s3.yml: a MinIO service and its bucket, the api and workers on EMOPRES_BLOB_STORE=s3 with
    a bucket, an endpoint and credentials, and no volume shared between the api and the workers."""
    s3 = yaml.safe_load(COMPOSE_S3.read_text())
    services = {**compose["services"], **s3["services"]}
    check_services(s3["services"], services, set(compose.get("volumes") or {}) | set(s3.get("volumes") or {}))
    for name in ("migrate", "api", "worker"):
        environment = s3["services"][name]["environment"]
        assert environment["EMOPRES_BLOB_STORE"] == "s3" and environment["EMOPRES_S3_BUCKET"]
        assert environment["EMOPRES_S3_ENDPOINT_URL"].endswith("//minio:9000}") and environment["AWS_ACCESS_KEY_ID"]
    assert "minio-bucket" in s3["services"]["worker"]["depends_on"]
    worker_data = {v.split(":")[0] for v in s3["services"]["worker"]["volumes"] if v.split(":")[1] == "/data"}
    assert worker_data and not worker_data & {v.split(":")[0] for v in compose["services"]["api"]["volumes"]}
