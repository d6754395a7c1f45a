"""The pairs file of `emopres evaluate`, of job uploads and of `emopres submit`: CSV or JSONL."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from emopres_client.safe_text import MAX_FIELD_CHARS, MAX_PATH_CHARS, UnsafeText, check_text, loads_checked

REQUIRED_COLUMNS = ("pair_id", "source", "target")
# the group column used when none is named: the first of these the file has (CIs then resample whole groups)
DEFAULT_GROUP_COLUMNS = ("group", "speaker")
NO_GROUPS = "none"  # as the group column: ignore any group column (CIs resample pairs)


class ManifestError(ValueError):
    """An unusable pairs file; the message names the problem once, for the user."""


class TooManyRows(ManifestError):
    """More pairs than max_rows: raised as soon as the first one too many is read (the rest is never parsed)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"pairs file has more than {limit} pairs")
        self.limit = limit


@dataclass(frozen=True)
class PairSpec:
    pair_id: str
    source: str
    target: str
    label: str | None = None
    group: str | None = None


CSV_BREAKS = re.compile(r"\r\n|[\r\n]")  # the lines of open(newline=""), as the csv module needs them
LINE_BREAKS = re.compile(r"\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # str.splitlines()'s


def _lines(text: str, breaks: re.Pattern, keep_ends: bool):
    """The lines of `text` one at a time (splitlines() made them all at once: millions of strings)."""
    start = 0
    for match in breaks.finditer(text):
        yield text[start : match.end() if keep_ends else match.start()]
        start = match.end()
    if start < len(text):
        yield text[start:]


def _check_count(records: list, max_rows: int | None) -> None:
    if max_rows is not None and len(records) > max_rows:
        raise TooManyRows(max_rows)


def _records_from_csv(text: str, max_rows: int | None = None) -> list[dict]:
    records: list[dict] = []
    try:
        reader = csv.DictReader(_lines(text, CSV_BREAKS, keep_ends=True))
        if not reader.fieldnames:
            raise ManifestError("pairs file is empty")
        for row in reader:
            records.append(dict(row))
            _check_count(records, max_rows)
        return records
    except csv.Error as error:
        raise ManifestError(f"not a valid CSV file (line {reader.line_num}: {error})") from None


def _records_from_jsonl(text: str, max_rows: int | None = None) -> list[dict]:
    records = []
    for number, line in enumerate(_lines(text, LINE_BREAKS, keep_ends=False), start=1):
        if not line.strip():
            continue
        try:
            record = loads_checked(line, f"line {number}")
        except json.JSONDecodeError as error:
            raise ManifestError(f"line {number} is not valid JSON ({error.msg})") from None
        except UnsafeText as error:
            raise ManifestError(str(error)) from None
        if not isinstance(record, dict):
            raise ManifestError(f"line {number} is not a JSON object")
        records.append(record)
        _check_count(records, max_rows)
    return records


def _looks_like_jsonl(text: str, name: str | None) -> bool:
    if name and Path(name).suffix.lower() in {".jsonl", ".ndjson", ".json"}:
        return True
    if name and Path(name).suffix.lower() in {".csv", ".tsv"}:
        return False
    return text.lstrip()[:1] in {"{", "["}


FIELD_LIMITS = {
    "pair_id": MAX_FIELD_CHARS,
    "source": MAX_PATH_CHARS,
    "target": MAX_PATH_CHARS,
    "label": MAX_FIELD_CHARS,
    "group": MAX_FIELD_CHARS,
}


def _text(value, field: str, number: int) -> str | None:
    """A manifest cell as stripped text (None when empty), refused when a later read could not handle it."""
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise ManifestError(f"pair {number}: {field} must be a string or a number, not {type(value).__name__}")
    value = str(value).strip()
    try:
        check_text(value, f"pair {number}: {field}", FIELD_LIMITS[field])
    except UnsafeText as error:
        raise ManifestError(str(error)) from None
    return value or None


def group_key_of(columns: set, group_column: str | None) -> str | None:
    """The column holding each pair's group: `group_column` when named (an error when the file lacks it), none for
    NO_GROUPS, else the first of DEFAULT_GROUP_COLUMNS the file has."""
    if group_column == NO_GROUPS:
        return None
    if group_column is not None and group_column not in columns:
        raise ManifestError(
            f"group column {group_column!r} not found "
            f"(columns: {', '.join(sorted(c for c in columns if isinstance(c, str)))}; "
            f"{NO_GROUPS!r} resamples pairs, ignoring groups)"
        )
    return group_column or next((c for c in DEFAULT_GROUP_COLUMNS if c in columns), None)


def uses_groups(pairs: list[PairSpec], group_column: str | None) -> bool:
    """Whether CIs resample groups: a group column was named (a pair without a group then falls back to pairs, with a
    note in the report), or the default one gave some pair a group."""
    return group_column not in (None, NO_GROUPS) or any(p.group for p in pairs)


def parse_pairs(
    text: str, *, name: str | None = None, group_column: str | None = None, max_rows: int | None = None
) -> list[PairSpec]:
    """Parse and validate pairs; raise ManifestError on the first problem, TooManyRows (one) as soon as a row
    beyond `max_rows` is read: the rest of the file is never parsed. Each pair's group comes from
    `group_column` (see group_key_of: by default a `group`, else a `speaker` column)."""
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise ManifestError("pairs file is empty")
    read = _records_from_jsonl if _looks_like_jsonl(text, name) else _records_from_csv
    records = read(text, max_rows)
    if not records:
        raise ManifestError("pairs file has a header but no pairs")
    columns = set().union(*(r.keys() for r in records))
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(f"missing column(s): {', '.join(missing)} (need {', '.join(REQUIRED_COLUMNS)})")
    group_key = group_key_of(columns, group_column)
    pairs, seen = [], set()
    for number, record in enumerate(records, start=1):
        pair_id, source, target = (_text(record.get(c), c, number) for c in REQUIRED_COLUMNS)
        if pair_id is None or source is None or target is None:
            raise ManifestError(f"pair {number}: pair_id, source and target must not be empty")
        if pair_id in seen:
            raise ManifestError(f"duplicate pair_id {pair_id!r}")
        seen.add(pair_id)
        pairs.append(
            PairSpec(
                pair_id,
                source,
                target,
                _text(record.get("label"), "label", number),
                _text(record.get(group_key), "group", number) if group_key else None,
            )
        )
    return pairs


def read_pairs_file(path, *, group_column: str | None = None, max_rows: int | None = None) -> list[PairSpec]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"cannot read pairs file {path}: {error}") from None
    return parse_pairs(text, name=path.name, group_column=group_column, max_rows=max_rows)


def check_relative_path(path: str) -> str:
    """A manifest path that must stay inside its upload: relative, no '..', normalised."""
    posix = PurePosixPath(path.replace("\\", "/"))
    if posix.is_absolute() or (posix.parts and ":" in posix.parts[0]):
        raise ManifestError(f"audio path {path!r} must be relative")
    if any(part == ".." for part in posix.parts):
        raise ManifestError(f"audio path {path!r} must not contain '..'")
    normalised = str(posix)
    if normalised in {"", "."}:
        raise ManifestError("empty audio path")
    return normalised
