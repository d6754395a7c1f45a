"""schemathesis against the app's own OpenAPI document (in-process ASGI): no 5xx, one error shape.

Every operation gets schema-conforming (positive) and schema-violating (negative) requests with a
valid token; the routes under /v1/jobs/{job_id} get them twice, with generated ids and with the id
of a real finished job (so the report, plot, page and comparison code runs on arbitrary query
parameters). Examples are bounded and derandomized: the run takes seconds and never flakes.
A second test fuzzes the multipart form of POST /v1/jobs (field names, manifests, text fields).
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

schemathesis = pytest.importorskip("schemathesis")

from schemathesis.generation.modes import GenerationMode  # noqa: E402

from app.auth import create_token  # noqa: E402
from app.main import create_app  # noqa: E402
from tests.service.test_service_api import service_settings  # noqa: E402
from tests.service_support import wav_bytes  # noqa: E402

EXAMPLES = 20
EXPENSIVE = {"/v1/jobs/{job_id}/report.html": 4, "/v1/jobs/{job_id}/compare/{baseline_id}": 6}
# The only operations (method, path, with the real job's id) that have no negative form: nothing in their request
# can be made invalid (no query, header, body or security parameter), so hypothesis finds no schema-violating
# example and raises Unsatisfiable. Since the OpenAPI declares the bearer scheme, every /v1 route has one (a
# malformed Authorization header). Any other operation that cannot be fuzzed fails the test.
NO_NEGATIVE_FORM = {("get", path, False) for path in ("/healthz", "/readyz", "/metrics")}


@pytest.fixture(scope="module")
def api(tmp_path_factory, random_lite_head):
    """(app, schema, auth headers, id of a succeeded job); the app's lifespan runs once, in schemathesis' client."""
    from schemathesis.python import asgi

    app = create_app(service_settings(tmp_path_factory.mktemp("schemathesis"), random_lite_head, bootstrap=50))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the app (its lifespan) once
    try:
        with app.state.services.sessions() as session:
            headers = {"Authorization": f"Bearer {create_token(session, 'fuzz', 'fuzz')}"}
        with asgi.get_client(app) as client:
            manifest = "pair_id,source,target,label\na,s.wav,t.wav,joy\nb,t.wav,s.wav,anger\n"
            response = client.post(
                "/v1/jobs",
                headers=headers,
                files=[
                    ("manifest", ("m.csv", manifest.encode())),
                    ("s.wav", ("s.wav", wav_bytes(1.0, seed=1))),
                    ("t.wav", ("t.wav", wav_bytes(1.2, seed=2))),
                ],
            )
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            deadline = time.monotonic() + 120
            while client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"] != "succeeded":
                assert time.monotonic() < deadline, "the fuzzing fixture's job did not finish"
                time.sleep(0.2)
            while client.get("/readyz").status_code != 200:  # a ready service: /readyz may not 503 either
                assert time.monotonic() < deadline, client.get("/readyz").text
                time.sleep(0.2)
        yield app, schema, headers, job_id
    finally:
        asgi.shutdown_lifespans()  # stops the embedded worker


def problems_of(response, path: str) -> str | None:
    if response.status_code >= 500:
        return f"{response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not (
            isinstance(body, dict) and set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
        ):
            return f"{response.status_code} outside the error shape: {response.text[:300]}"
    return None


def test_openapi_fuzzing_finds_no_server_error(api):
    app, schema, headers, job_id = api
    found: dict[tuple, str] = {}
    ran: dict[tuple, int] = {}
    unsatisfiable = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        fixed = {name: job_id for name in ("job_id", "baseline_id") if "{" + name + "}" in operation.path}
        variants = [None] + ([fixed] if fixed and operation.method != "delete" else [])
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for path_parameters in variants:
                key = (operation.method, operation.path, path_parameters is not None)
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

                @given(case=strategy)
                @settings(
                    max_examples=EXPENSIVE.get(operation.path, EXAMPLES),
                    deadline=None,
                    derandomize=True,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def check(case, key, mode, operation):
                    ran[key, mode] = ran.get((key, mode), 0) + 1
                    try:
                        response = case.call(headers=headers)
                    except Exception as error:  # the app raised: a 500 to a real client
                        found.setdefault(
                            (operation.method, operation.path, type(error).__name__), f"{error!r} on {case!r}"
                        )
                        return
                    problem = problems_of(response, operation.path)
                    if problem:
                        found.setdefault(
                            (operation.method, operation.path, response.status_code), f"{problem} on {case!r}"
                        )

                try:
                    check(key=key, mode=mode, operation=operation)
                except Unsatisfiable:  # no schema-violating request exists: expected only where documented
                    if mode is not GenerationMode.NEGATIVE:
                        raise
                    unsatisfiable.add(key)
    assert not found, "\n".join(f"{key}: {value[:800]}" for key, value in found.items())
    assert unsatisfiable == NO_NEGATIVE_FORM, (
        f"without a negative form, not documented: "
        f"{sorted(unsatisfiable - NO_NEGATIVE_FORM)}; documented, but fuzzed "
        f"after all (update NO_NEGATIVE_FORM): "
        f"{sorted(NO_NEGATIVE_FORM - unsatisfiable)}"
    )
    operations = {(r.ok().method, r.ok().path) for r in schema.get_all_operations()}
    positive = {(method, path) for (method, path, _), mode in ran if mode is GenerationMode.POSITIVE}
    assert positive == operations, f"never called with a valid request: {sorted(operations - positive)}"
    assert sum(ran.values()) > 200


def test_multipart_fuzzing_of_job_submission(api):
    """Arbitrary field names, manifests and text fields: always a 202 or a 4xx in the one error shape."""
    from schemathesis.python import asgi

    app, _, headers, _ = api
    audio = wav_bytes(0.5, seed=3)
    names = st.text(max_size=24)
    found: dict = {}

    with asgi.get_client(app) as client:

        @given(
            fields=st.lists(st.tuples(names, st.booleans(), st.binary(max_size=32) | st.just(audio)), max_size=4),
            manifest=st.text(max_size=120) | st.builds("pair_id,source,target\n{},{},{}\n".format, names, names, names),
            texts=st.dictionaries(
                st.sampled_from(["name", "profile", "metadata", "group_column"]), st.text(max_size=40), max_size=3
            ),
        )
        @settings(
            max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(fields, manifest, texts):
            files = [("manifest", ("m.csv", manifest.encode("utf-8", "surrogatepass")))]
            data = dict(texts)
            for name, as_file, content in fields:
                if as_file:
                    files.append((name, (name or "x", content)))
                else:
                    data[name] = content.decode("latin-1")
            try:
                response = client.post("/v1/jobs", headers=headers, files=files, data=data)
            except Exception as error:
                found.setdefault(type(error).__name__, repr((error, fields, manifest, texts))[:800])
                return
            problem = problems_of(response, "/v1/jobs")
            if problem:
                found.setdefault(response.status_code, f"{problem} on {(fields, manifest, texts)!r}"[:800])

        check()
    assert not found, found
