"""Numbers and manifests (issue 26, points 4 and 5), against SQLite and PostgreSQL services.

Point 4: a JSON integer of more than 4,300 digits (Python's limit on int parsing) in `metadata` or in a
JSONL manifest was a 500 (a traceback in `emopres evaluate`); `1e400` was stored as null (a pair_id "inf");
`name_prefix=%00` was a 500 on PostgreSQL. Each is now a 422 (exit 2 in the CLI).

Point 5: a manifest was capped after parsing all of it (a 1M-row CSV: 413 after 12 s and +522 MB). The
shared parser now stops at the row limit (max_rows; EMOPRES_MAX_PAIRS in the service) while reading.
Memory is measured in-process (tracemalloc: the peak of Python allocations during the request).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tracemalloc

import pytest
from fastapi.testclient import TestClient

from app.auth import create_token
from app.main import create_app
from cli.main import main
from emopres_client.pairs import ManifestError, TooManyRows, parse_pairs
from emopres_client.safe_text import MAX_JSON_INT_DIGITS, UnsafeText, loads_checked
from tests.service.test_service_api import GOOD, assert_error, counts, service_settings
from tests.service_support import drop_postgres_schema, new_postgres_schema, wav_bytes

MiB = 1024 * 1024
BIG_INT = "1" * (MAX_JSON_INT_DIGITS + 1)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tmp_path_factory, random_lite_head):
    overrides = {}
    if request.param == "postgresql":
        postgres_url = request.getfixturevalue("postgres_url")
        schema = f"emopres_manifest_limits_{os.getpid()}"
        overrides = dict(database_url=new_postgres_schema(postgres_url, schema), auto_migrate=True)
    app = create_app(
        service_settings(tmp_path_factory.mktemp(f"limits-{request.param}"), random_lite_head, **overrides),
        start_worker=False,
    )
    try:
        with TestClient(app) as client:
            with app.state.services.sessions() as session:
                client.headers["Authorization"] = f"Bearer {create_token(session, 'ci', 'team-l')}"
            client.services = app.state.services
            yield client
    finally:
        if overrides:
            drop_postgres_schema(postgres_url, schema)


def files(manifest: str, name: str = "m.csv") -> list:
    return [("manifest", (name, manifest.encode()))] + [
        (p, (p, wav_bytes(1.0, seed=60 + i))) for i, p in enumerate(("s.wav", "t.wav"))
    ]


def jsonl_line(pair_id: str) -> str:
    return '{"pair_id": ' + pair_id + ', "source": "s.wav", "target": "t.wav"}\n'


# ---------------------------------------------------------------- point 4: numbers


REFUSED = {
    "metadata integer over the digit limit": (
        dict(metadata='{"a": ' + BIG_INT + "}"),
        GOOD,
        "m.csv",
        "invalid_metadata",
        "digits",
    ),
    "metadata negative integer over the limit": (
        dict(metadata='{"a": [-' + BIG_INT + "]}"),
        GOOD,
        "m.csv",
        "invalid_metadata",
        "digits",
    ),
    "metadata 1e400": (dict(metadata='{"a": 1e400}'), GOOD, "m.csv", "invalid_metadata", "finite"),
    "metadata -1e400": (dict(metadata='{"a": {"b": -1e400}}'), GOOD, "m.csv", "invalid_metadata", "finite"),
    "metadata a float of 400 digits": (
        dict(metadata='{"a": ' + "9" * 400 + ".5}"),
        GOOD,
        "m.csv",
        "invalid_metadata",
        "finite",
    ),
    "jsonl pair_id integer over the limit": ({}, jsonl_line(BIG_INT), "m.jsonl", "invalid_manifest", "digits"),
    "jsonl pair_id 1e400": ({}, jsonl_line("1e400"), "m.jsonl", "invalid_manifest", "finite"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_numbers_json_cannot_hold_are_refused(service, case):
    data, manifest, name, code, word = REFUSED[case]
    before = counts(service.services)
    error = assert_error(service.post("/v1/jobs", files=files(manifest, name), data=data), 422, code)
    assert word in error["message"] and len(error["message"]) < 300
    assert counts(service.services) == before


def test_numbers_within_the_limits_are_kept(service):
    metadata = '{"a": ' + "9" * MAX_JSON_INT_DIGITS + ', "b": 1.5e300, "c": -0.0}'
    response = service.post("/v1/jobs", files=files(jsonl_line("12345"), "m.jsonl"), data={"metadata": metadata})
    assert response.status_code == 202, response.text
    job = service.get(f"/v1/jobs/{response.json()['id']}").json()
    assert job["metadata"]["a"] == int("9" * MAX_JSON_INT_DIGITS) and job["metadata"]["b"] == 1.5e300
    assert service.get(f"/v1/jobs/{job['id']}/pairs.csv").text.splitlines()[1].startswith("12345,")


@pytest.mark.parametrize("query", [{"name_prefix": "\0"}, {"name_prefix": "a\0b"}])
def test_name_prefix_is_checked_like_name(service, query):
    assert_error(service.get("/v1/jobs", params=query), 422, "invalid_field")
    assert service.get("/v1/jobs", params={"name_prefix": "sys@"}).status_code == 200


@pytest.mark.parametrize("pair_id, word", [(BIG_INT, "digits"), ("1e400", "finite"), ("-1e400", "finite")])
def test_cli_refuses_them_with_exit_2(tmp_path, capsys, pair_id, word):
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text(jsonl_line(pair_id))
    for name in ("s.wav", "t.wav"):
        (tmp_path / name).write_bytes(wav_bytes(1.0))
    status = main(["evaluate", str(manifest), "--out", str(tmp_path / "r.json"), "--no-cache"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert word in err and not (tmp_path / "r.json").exists()


def test_loads_checked_names_the_problem():
    with pytest.raises(UnsafeText, match=rf"an integer of {MAX_JSON_INT_DIGITS + 1} digits"):
        loads_checked('{"a": ' + BIG_INT + "}", "metadata")
    with pytest.raises(UnsafeText, match="not a finite number"):
        loads_checked("[1e400]", "metadata")
    assert loads_checked('{"a": 12, "b": 2.5}', "x") == {"a": 12, "b": 2.5}
    assert isinstance(loads_checked("1.0", "x"), float) and isinstance(loads_checked("10", "x"), int)


# ---------------------------------------------------------------- point 5: rows


def csv_manifest(rows: int) -> str:
    return "pair_id,source,target\n" + "".join(f"p{i},s.wav,t.wav\n" for i in range(rows))


def test_a_million_row_manifest_is_refused_while_it_is_read(service):
    limit = service.services.settings.max_pairs
    for manifest, name in (
        (csv_manifest(1_000_000), "m.csv"),
        ("".join(jsonl_line(f'"p{i}"') for i in range(300_000)), "m.jsonl"),
    ):
        body = files(manifest, name)
        del manifest
        before = counts(service.services)
        tracemalloc.start()
        try:
            response = service.post("/v1/jobs", files=body)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        error = assert_error(response, 413, "too_many_pairs")
        assert str(limit) in error["message"] and error["details"]["limit"] == limit
        assert peak < 200 * MiB, f"{name}: {peak / MiB:.0f} MiB"
        assert counts(service.services) == before


def test_the_cap_is_exact(service):
    limit = service.services.settings.max_pairs
    manifest = "pair_id,source,target\n" + "".join(f"p{i},s.wav,t.wav\n" for i in range(limit))
    assert service.post("/v1/jobs", files=files(manifest)).status_code == 202
    assert_error(service.post("/v1/jobs", files=files(manifest + "extra,s.wav,t.wav\n")), 413, "too_many_pairs")


def test_the_parser_stops_at_max_rows():
    # rows after the limit are never looked at: a broken one there does not change the answer
    text = csv_manifest(4) + "p1,s.wav,t.wav\n" + 'p9,"unterminated\n'
    with pytest.raises(TooManyRows, match="more than 3 pairs") as caught:
        parse_pairs(text, max_rows=3)
    assert caught.value.limit == 3 and isinstance(caught.value, ManifestError)
    with pytest.raises(TooManyRows):
        parse_pairs("".join(jsonl_line(f'"p{i}"') for i in range(4)) + "not json\n", name="m.jsonl", max_rows=3)
    assert len(parse_pairs(csv_manifest(3), max_rows=3)) == 3
    assert len(parse_pairs(csv_manifest(3) + "\n\n", max_rows=3)) == 3  # blank lines are not rows
    with pytest.raises(ManifestError, match="duplicate"):
        parse_pairs(csv_manifest(3) + "p1,s.wav,t.wav\n", max_rows=None)


@pytest.mark.parametrize(
    "text",
    [
        "pair_id,source,target\r\na,s.wav,t.wav\r\nb,s2.wav,t2.wav\r\n",
        "pair_id,source,target\ra,s.wav,t.wav\rb,s2.wav,t2.wav",
        'pair_id,source,target,label\na,s.wav,t.wav,"two\nlines"\nb,"s\r\n2.wav",t.wav,x\n',
        "pair_id,source,target\n\na,s.wav,t.wav\n\n\nb,s2.wav,t2.wav",
    ],
)
def test_csv_is_read_as_before(text):
    expected = [row for row in csv.DictReader(io.StringIO(text, newline=""))]
    pairs = parse_pairs(text)
    assert [(p.pair_id, p.source, p.target, p.label) for p in pairs] == [
        (r["pair_id"].strip(), r["source"].strip(), r["target"].strip(), (r.get("label") or "").strip() or None)
        for r in expected
    ]


@pytest.mark.parametrize("separator", ["\n", "\r\n", "\r", "\u2028", "\x0c"])
def test_jsonl_lines_are_split_as_before(separator):
    lines = [json.dumps({"pair_id": f"p{i}", "source": "s.wav", "target": "t.wav"}) for i in range(3)]
    text = separator.join(lines)
    assert [p.pair_id for p in parse_pairs(text, name="m.jsonl")] == ["p0", "p1", "p2"]
    assert [p.pair_id for p in parse_pairs(text, name="m.jsonl", max_rows=3)] == ["p0", "p1", "p2"]
