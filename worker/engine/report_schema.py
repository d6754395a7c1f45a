"""JSON Schema (draft 2020-12) of the report, one per ``schema_version`` (docs/metrics.md).

Published by the service at ``GET /v1/schema/report`` (``?version=1``) so dashboards can validate
what they ingest. Within one version fields are only ever added (``additionalProperties`` stays
open); renaming or removing a field, or changing a type, means a new ``schema_version``.

The schema pins the rule "a metric that cannot be computed is ``{"value": null, "reason": ...}``,
never a silent zero": an entry with a null value must carry a non-empty reason.
"""

from __future__ import annotations

import copy

from core.catalogue import METRICS, PAIR_METRICS, SIDE_PRED, SIDE_PROBS
from worker.engine.report import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSIONS", "report_schema", "validate_report", "ReportSchemaError"]

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_STRING_OR_NULL = {"type": ["string", "null"]}
_COUNT = {"type": "integer", "minimum": 0}
_UNIT = {"type": ["number", "null"], "minimum": 0, "maximum": 1}

_METRIC = {
    "type": "object",
    "description": "A corpus metric. value null -> reason says why; value set with null CIs -> reason "
    "says why the interval is undefined (or the bootstrap was switched off).",
    "required": ["value", "ci_low", "ci_high", "n", "reason"],
    "properties": {
        "value": _NUMBER_OR_NULL,
        "ci_low": _NUMBER_OR_NULL,
        "ci_high": _NUMBER_OR_NULL,
        "n": _COUNT,
        "reason": _STRING_OR_NULL,
    },
    "if": {"properties": {"value": {"type": "null"}}},
    "then": {
        "properties": {
            "reason": {"type": "string", "minLength": 1},
            "ci_low": {"type": "null"},
            "ci_high": {"type": "null"},
        }
    },
}

_SIDE = {
    "type": "object",
    "required": ["pred", "probs", "uncertainty"],
    "properties": {
        "pred": {"type": "string"},
        "probs": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}},
        "uncertainty": {**_UNIT, "description": "entropy of probs / log K"},
        "duration_s": {"type": ["number", "null"], "minimum": 0},
        "pause_rate": {"type": ["number", "null"], "minimum": 0, "description": "pauses per second of speech span"},
        "speech_rate": {"type": ["number", "null"], "minimum": 0, "description": "syllables per second of speech"},
        SIDE_PRED: {"type": "string", "description": "the side-normalised reading's prediction (absent without one)"},
        SIDE_PROBS: {"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}},
    },
}

_PAIR = {
    "type": "object",
    "required": ["pair_id", "source", "target", "agree", "warnings"],
    "properties": {
        "pair_id": {"type": "string"},
        "label": _STRING_OR_NULL,
        "group": _STRING_OR_NULL,
        "source": {"$ref": "#/$defs/side"},
        "target": {"$ref": "#/$defs/side"},
        "agree": {"type": "boolean"},
        **{name: _NUMBER_OR_NULL for name in PAIR_METRICS},
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
}

_CONFUSION = {"type": ["array", "null"], "items": {"type": "array", "items": _COUNT}}

_SER_SIDE = {
    "type": "object",
    "required": ["ua", "wa", "confusion"],
    "properties": {"ua": _UNIT, "wa": _UNIT, "confusion": _CONFUSION, "reason": {"type": "string"}},
}

_PER_EMOTION = {
    "type": "object",
    "required": ["by_source_prediction"],
    "properties": {
        "by_source_prediction": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["n", "value"],
                "properties": {"n": _COUNT, "value": _UNIT, "reason": _STRING_OR_NULL},
            },
        },
        "by_gold": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["n", "source_recall", "target_recall", "agreement"],
                "properties": {
                    "n": _COUNT,
                    "source_recall": _UNIT,
                    "target_recall": _UNIT,
                    "agreement": _UNIT,
                    "reason": _STRING_OR_NULL,
                },
            },
        },
    },
}

_HEALTH = {
    "type": "object",
    "required": ["n", "top_class", "top_class_share", "entropy", "ua", "ua_chance"],
    "properties": {
        "n": _COUNT,
        "top_class": {"type": "string"},
        "top_class_share": _UNIT,
        "entropy": {**_UNIT, "description": "of the predicted classes, / log K (1 = every class alike)"},
        "ua": _UNIT,
        "ua_chance": {**_UNIT, "description": "1 / the number of gold classes"},
        "gold_top_class_share": _UNIT,
    },
}

_SUMMARY = {
    "type": "object",
    "description": "How far to trust the report (added within version 1: reports made before it lack it).",
    "required": ["primary", "ser_health", "metrics", "warnings"],
    "properties": {
        "primary": {
            "allOf": [
                {"$ref": "#/$defs/metric"},
                {
                    "type": "object",
                    "required": ["metric", "label", "direction", "chance"],
                    "properties": {
                        "metric": {"enum": list(METRICS)},
                        "label": {"type": "string"},
                        "direction": {"type": "string"},
                        "chance": _NUMBER_OR_NULL,
                    },
                },
            ],
            "description": "the preservation metric a CI gate should use, with its chance level",
        },
        "ser_health": {
            "type": "object",
            "additionalProperties": {
                "type": ["object", "null"],
                "required": ["source", "target"],
                "properties": {"source": _HEALTH, "target": _HEALTH},
            },
            "description": "per SER reading (absolute, side; null where the job has none)",
        },
        "metrics": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["direction", "chance"],
                "properties": {"direction": {"type": "string"}, "chance": _NUMBER_OR_NULL},
            },
        },
        "warnings": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["code", "side", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "side": {"enum": ["source", "target", None]},
                    "message": {"type": "string", "minLength": 1},
                },
            },
        },
    },
}

_V1 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://emopres.dev/schema/report/1.json",
    "title": "emopres report, schema_version 1",
    "description": "Emotion preservation report of one evaluation job (pairs of source and translated speech).",
    "type": "object",
    "required": ["schema_version", "job", "signature", "models", "corpus", "pairs", "failures"],
    "properties": {
        "schema_version": {"const": "1"},
        "job": {
            "type": "object",
            "required": ["id", "status", "created_at", "finished_at", "n_pairs", "n_failed"],
            "properties": {
                "id": _STRING_OR_NULL,
                "name": {**_STRING_OR_NULL, "description": "the job's name, e.g. system@commit (null offline)"},
                "metadata": {"type": ["object", "null"], "description": "the metadata the job was submitted with"},
                "profile": {"type": "string", "description": "the evaluation profile (lite, paper)"},
                "status": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
                "created_at": {"type": ["string", "null"], "format": "date-time"},
                "finished_at": {"type": ["string", "null"], "format": "date-time"},
                "n_pairs": _COUNT,
                "n_failed": _COUNT,
            },
        },
        "signature": {
            "type": "string",
            "pattern": r"^profile:[^|]+\|ser:[0-9a-f]{12}\|.*\|emopres:[^|]+$",
            "description": "every setting that changes a number: profile, model hashes, bootstrap, seed",
        },
        "models": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["source"],
                "properties": {
                    "source": {"type": "string"},
                    "sha256": _STRING_OR_NULL,
                    "version": {"type": ["string", "null"]},
                    "files_sha256": {
                        "type": ["string", "null"],
                        "description": "paper models: sha256 over every file of the model "
                        "(as in the model folder's lock file)",
                    },
                    "revision": {
                        "type": ["string", "null"],
                        "description": "the hub revision from the lock file, when the files match it",
                    },
                    "trained_on": {
                        "type": ["array", "null"],
                        "items": {"type": "string"},
                        "description": "SER heads: the corpora whose training speakers it was trained on",
                    },
                    "trained": {"type": ["string", "null"], "description": "SER heads: the date it was trained"},
                    "members": {"type": ["integer", "null"], "description": "SER heads: networks averaged"},
                    "normalised_per": {
                        "type": "object",
                        "additionalProperties": {"enum": ["group", "side"]},
                        "description": "ser_head_side: what each side was z-scored over "
                        "(each group on its own, or the whole side)",
                    },
                },
            },
        },
        "summary": _SUMMARY,
        "corpus": {
            "type": "object",
            "required": ["n_pairs", *METRICS, "per_emotion", "ser", "bootstrap"],
            "properties": {
                "n_pairs": _COUNT,
                **{name: {"$ref": "#/$defs/metric"} for name in METRICS},
                "per_emotion": _PER_EMOTION,
                "ser": {
                    "type": "object",
                    "required": ["classes", "n_labelled", "source", "target", "source_vs_target"],
                    "properties": {
                        "classes": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                        "n_labelled": _COUNT,
                        "source": _SER_SIDE,
                        "target": _SER_SIDE,
                        "source_vs_target": _CONFUSION,
                    },
                },
                "bootstrap": {
                    "type": "object",
                    "required": ["n_resamples", "seed", "unit"],
                    "properties": {
                        "n_resamples": _COUNT,
                        "seed": {"type": "integer"},
                        "unit": {"enum": ["pair", "group"]},
                        "confidence": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                        "note": _STRING_OR_NULL,
                        "n_groups": _COUNT,
                    },
                },
            },
        },
        "pairs": {"type": "array", "items": {"$ref": "#/$defs/pair"}},
        "failures": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["pair_id", "side", "error"],
                "properties": {
                    "pair_id": {"type": "string"},
                    "side": {"enum": ["source", "target", "pair"]},
                    "error": {"type": "string"},
                },
            },
        },
    },
    "$defs": {"metric": _METRIC, "side": _SIDE, "pair": _PAIR},
}

SCHEMA_VERSIONS = {"1": _V1}
assert SCHEMA_VERSION in SCHEMA_VERSIONS, "worker.engine.report.SCHEMA_VERSION has no JSON Schema here"


class ReportSchemaError(ValueError):
    def __init__(self, errors: list[str]):
        super().__init__("report does not match its schema:\n" + "\n".join(errors[:20]))
        self.errors = errors


def report_schema(version: str = SCHEMA_VERSION) -> dict:
    """The JSON Schema of reports with this ``schema_version`` (a copy). KeyError for an unknown version."""
    return copy.deepcopy(SCHEMA_VERSIONS[str(version)])


def validate_report(report: dict) -> None:
    """Raise ReportSchemaError listing every violation (needs the ``jsonschema`` package)."""
    import jsonschema

    version = str(report.get("schema_version")) if isinstance(report, dict) else None
    if version not in SCHEMA_VERSIONS:
        raise ReportSchemaError([f"unknown schema_version {version!r}; known: {', '.join(SCHEMA_VERSIONS)}"])
    validator_cls = jsonschema.Draft202012Validator
    validator = validator_cls(SCHEMA_VERSIONS[version], format_checker=validator_cls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.absolute_path))
    if errors:
        raise ReportSchemaError([f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors])
