"""Text and JSON that every later read can handle: checked at the door, the same for SQLite and PostgreSQL.

What is refused: a NUL character (PostgreSQL text cannot hold it), a lone UTF-16 surrogate
(JSON's "\\ud800" parses to one; it cannot be encoded as UTF-8, so every response holding it
would fail), JSON nested deeper than MAX_JSON_DEPTH (Python's encoders and decoders recurse),
JSON integers longer than MAX_JSON_INT_DIGITS (Python will not parse or print longer ones),
numbers beyond a double's range (1e400 became inf, then null or "inf"), and text longer than
its column.
"""

from __future__ import annotations

import json
import math

MAX_JSON_DEPTH = 32
MAX_JSON_INT_DIGITS = 4300  # Python's own limit on int <-> text (sys.int_info.default_max_str_digits)
MAX_FIELD_CHARS = 255  # pair_id, label, group: String(255) columns
MAX_PATH_CHARS = 4096


class UnsafeText(ValueError):
    """Input that would break a later read; the message names the problem and is safe to show."""


def check_text(value: str, what: str, max_chars: int | None = None) -> str:
    """The value, or UnsafeText naming `what` (the message never holds the value itself: it may not be printable)."""
    if "\x00" in value:
        raise UnsafeText(f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise UnsafeText(f"{what} contains a lone surrogate ({ascii(value[error.start])}), which is not text") from None
    if max_chars is not None and len(value) > max_chars:
        raise UnsafeText(f"{what} is longer than {max_chars} characters ({len(value)})")
    return value


def check_json(value, what: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Every key and string of a parsed JSON value is safe text, and it nests at most `max_depth` deep.
    Iterative, so that it works on any value the parser returned."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            check_text(item, f"{what}: a string")
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > max_depth:
            raise UnsafeText(f"{what} is nested deeper than {max_depth} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                check_text(key, f"{what}: a key")
                stack.append((child, depth + 1))
        else:
            stack.extend((child, depth + 1) for child in item)


def _no_constant(name: str):
    """NaN and Infinity are not JSON (RFC 8259); Python's parser takes them, and they came back as null."""
    raise UnsafeText(f"{name} is not a JSON value (send null or a string)")


def _shown(number: str) -> str:
    return number if len(number) <= 24 else f"{number[:20]}... ({len(number)} characters)"


def _number_parsers(what: str):
    def parse_int(number: str) -> int:
        digits = len(number) - number.startswith("-")
        if digits > MAX_JSON_INT_DIGITS:
            raise UnsafeText(f"{what} holds an integer of {digits} digits, over the limit of {MAX_JSON_INT_DIGITS}")
        try:
            return int(number)
        except ValueError:  # the interpreter's own limit set lower (PYTHONINTMAXSTRDIGITS)
            raise UnsafeText(f"{what} holds an integer of {digits} digits, more than this service parses") from None

    def parse_float(number: str) -> float:
        value = float(number)
        if not math.isfinite(value):
            raise UnsafeText(
                f"{what} holds {_shown(number)}, which is not a finite number (a double ends near 1.8e308)"
            )
        return value

    return parse_int, parse_float


def loads_checked(text: str, what: str, max_depth: int = MAX_JSON_DEPTH):
    """json.loads, refusing NaN/Infinity, numbers beyond MAX_JSON_INT_DIGITS or a double's range, nesting too deep
    for the parser or for `max_depth`, and unsafe text. Raises json.JSONDecodeError for malformed JSON and
    UnsafeText for the rest."""
    parse_int, parse_float = _number_parsers(what)
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_int=parse_int, parse_float=parse_float)
    except RecursionError:
        raise UnsafeText(f"{what} is nested deeper than {max_depth} levels") from None
    check_json(value, what, max_depth)
    return value
