"""The report's JSON Schema: real reports validate; the rules it pins catch what they should."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("jsonschema")

from tests.report_fixtures import make_report, make_rows, real_run  # noqa: E402
from worker.engine.report import SCHEMA_VERSION  # noqa: E402
from worker.engine.report_schema import ReportSchemaError, report_schema, validate_report  # noqa: E402


def test_the_schema_is_itself_valid_draft_2020_12():
    import jsonschema

    schema = report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"] == {"const": SCHEMA_VERSION}


@pytest.mark.parametrize("kwargs", [{}, {"labels": False}, {"acoustic": False, "emo_sim": True}])
def test_synthetic_reports_validate(kwargs):
    validate_report(
        make_report(
            make_rows(n=10, **kwargs),
            n_bootstrap=50,
            failures=[{"pair_id": "x", "side": "source", "error": "empty file"}],
        )
    )


def test_an_empty_report_validates():
    validate_report(make_report([], n_bootstrap=0))


@pytest.mark.shared_data
def test_a_real_report_validates(shared_data, random_lite_head, tmp_path_factory):
    validate_report(real_run(shared_data, random_lite_head, tmp_path_factory.mktemp("real"))["report"])


def mutated(change):
    report = copy.deepcopy(make_report(make_rows(n=6), n_bootstrap=20))
    change(report)
    return report


@pytest.mark.parametrize(
    "change, where",
    [
        (lambda r: r["corpus"]["bar"].update(value=None, reason=None, ci_low=None, ci_high=None), "corpus/bar/reason"),
        (lambda r: r["corpus"].pop("epr"), "corpus"),
        (lambda r: r["pairs"][0]["source"].update(uncertainty=1.5), "pairs/0/source/uncertainty"),
        (lambda r: r["pairs"][0].update(agree="yes"), "pairs/0/agree"),
        (lambda r: r.update(schema_version="1", signature="no profile here"), "signature"),
        (lambda r: r["failures"].append({"pair_id": "a", "side": "left", "error": "x"}), "failures/0/side"),
    ],
)
def test_violations_are_named(change, where):
    with pytest.raises(ReportSchemaError) as caught:
        validate_report(mutated(change))
    assert any(e.startswith(where) for e in caught.value.errors), caught.value.errors


def test_unknown_version_is_refused():
    with pytest.raises(ReportSchemaError, match="unknown schema_version"):
        validate_report({"schema_version": "99"})
