"""Turn an upload (manifest + audio fields, or one archive) into a validated job request.

Everything is checked before anything is stored: the manifest, every path, every audio file's
header (once per distinct content; the worker decodes), the caps. Any problem raises an APIError (4xx).
An archive upload is unpacked first by app.submission.archives.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from app.plumbing.errors import InvalidAudio, InvalidManifest, InvalidRequest, TooLarge
from core.blobstore import Hashed
from core.profiles import PROFILES
from emopres_client.pairs import (
    ManifestError,
    PairSpec,
    TooManyRows,
    check_relative_path,
    parse_pairs,
    uses_groups,
)
from emopres_client.safe_text import MAX_PATH_CHARS, UnsafeText, check_text, loads_checked

MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
KEEP_HASHED_BYTES = 16 * 1024 * 1024  # per request (_hash)


@dataclass
class AudioFile:
    path: str
    size: int
    read: Callable[[], bytes]
    sha256: str = ""


@dataclass
class JobRequest:
    pairs: list[PairSpec]
    files: dict[str, AudioFile]  # referenced files only, by normalised path
    name: str | None
    profile: str
    metadata: dict | None
    use_groups: bool
    fingerprint: str = ""
    blobs: dict[str, AudioFile] = field(default_factory=dict)  # distinct contents by sha256
    seconds: dict[str, float] = field(default_factory=dict)  # audio duration by sha256 (validate_audio)


def normalise_path(path: str, what: str = "audio path") -> str:
    try:
        check_text(path, what, MAX_PATH_CHARS)
        return check_relative_path(path)
    except UnsafeText as error:
        raise InvalidManifest(str(error)) from None
    except ManifestError as error:
        raise InvalidManifest(f"{what}: {error}", details={"path": path}) from None


def check_field(value: str, what: str, max_chars: int | None = None, code: str = "invalid_field") -> str:
    """A form text field or query value that every later read (and PostgreSQL) can handle, or a 422."""
    try:
        return check_text(value, what, max_chars)
    except UnsafeText as error:
        raise InvalidRequest(str(error), code=code) from None


def parse_metadata(text: str | None, max_bytes: int) -> dict | None:
    if text is None or not text.strip():
        return None
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise TooLarge(f"metadata is over {max_bytes} bytes", details={"limit": max_bytes})
    try:
        value = loads_checked(text, "metadata")
    except json.JSONDecodeError as error:
        raise InvalidRequest(
            f"metadata is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})",
            code="invalid_metadata",
        ) from None
    except UnsafeText as error:
        raise InvalidRequest(f"metadata is refused: {error}", code="invalid_metadata") from None
    if not isinstance(value, dict):
        raise InvalidRequest("metadata must be a JSON object", code="invalid_metadata")
    return value


def check_profile(profile: str | None, service_profile: str) -> str:
    profile = (profile or "").strip() or service_profile
    if profile not in PROFILES:
        raise InvalidRequest(
            f"unknown profile {profile!r} (profiles: {', '.join(PROFILES)})",
            code="unsupported_profile",
            details={"profile": profile, "available": [service_profile]},
        )
    if profile != service_profile:
        raise InvalidRequest(
            f"this service evaluates with the {service_profile!r} profile, not {profile!r}",
            code="unsupported_profile",
            details={"profile": profile, "available": [service_profile]},
        )
    return profile


def check_name(name: str | None) -> str | None:
    name = (name or "").strip() or None
    return None if name is None else check_field(name, "name", 200, code="invalid_name")


def check_manifest_size(size: int) -> None:
    if size > MAX_MANIFEST_BYTES:
        raise TooLarge(f"manifest is over {MAX_MANIFEST_BYTES} bytes", details={"limit": MAX_MANIFEST_BYTES})


def decode_manifest(data: bytes, name: str | None) -> str:
    check_manifest_size(len(data))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidManifest(f"manifest {name or ''} is not UTF-8 text".replace("  ", " ")) from None


def build_request(
    *,
    manifest_text: str,
    manifest_name: str | None,
    files: dict[str, AudioFile],
    name: str | None,
    profile: str,
    metadata: dict | None,
    group_column: str | None,
    settings,
) -> JobRequest:
    """Validate the manifest against the uploaded files and the caps; hash (not yet decode) the audio."""
    try:
        pairs = parse_pairs(
            manifest_text, name=manifest_name, group_column=group_column or None, max_rows=settings.max_pairs
        )  # stops at the first pair too many
    except TooManyRows:
        raise TooLarge(
            f"manifest has more than {settings.max_pairs} pairs, the cap per job",
            code="too_many_pairs",
            details={"limit": settings.max_pairs},
        ) from None
    except ManifestError as error:
        raise InvalidManifest(f"manifest: {error}") from None
    if len(pairs) > settings.max_pairs:  # max_rows counts them already; kept as a backstop
        raise TooLarge(
            f"{len(pairs)} pairs is over the cap of {settings.max_pairs} pairs per job",
            code="too_many_pairs",
            details={"pairs": len(pairs), "limit": settings.max_pairs},
        )
    normalised = []
    for pair in pairs:
        source = normalise_path(pair.source, f"pair {pair.pair_id!r} source")
        target = normalise_path(pair.target, f"pair {pair.pair_id!r} target")
        normalised.append(PairSpec(pair.pair_id, source, target, pair.label, pair.group))
    referenced = list(dict.fromkeys(p for pair in normalised for p in (pair.source, pair.target)))
    missing = [p for p in referenced if p not in files]
    if missing:
        # the uploads that matched no manifest path: usually the same files under other names (a folder prefix
        # too many or too few), which the client can only see if we list them
        unmatched = sorted(set(files) - set(referenced))
        raise InvalidManifest(
            f"{len(missing)} audio file(s) named by the manifest were not uploaded: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
            + (
                f"; {len(unmatched)} upload(s) match no manifest path: "
                f"{', '.join(unmatched[:5])}{' ...' if len(unmatched) > 5 else ''} "
                "(each file field or archive member must be named exactly as the manifest's "
                "source/target path)"
                if unmatched
                else ""
            ),
            code="missing_audio",
            details={
                "missing": missing[:100],
                "n_missing": len(missing),
                "unmatched": unmatched[:100],
                "n_unmatched": len(unmatched),
            },
        )
    chosen = {p: files[p] for p in referenced}
    for audio in chosen.values():
        if audio.size > settings.max_file_bytes:
            raise TooLarge(
                f"audio file {audio.path} is {audio.size} bytes, over the {settings.max_file_bytes}-byte cap",
                code="file_too_large",
                details={"path": audio.path, "limit": settings.max_file_bytes},
            )
    request = JobRequest(
        normalised, chosen, name, profile, metadata, use_groups=uses_groups(normalised, group_column or None)
    )
    request.blobs = _hash(chosen.values())
    request.fingerprint = hashlib.sha256(
        json.dumps(
            {
                "manifest": hashlib.sha256(manifest_text.encode()).hexdigest(),
                "name": name,
                "profile": profile,
                "metadata": metadata,
                "group_column": group_column or None,
                "files": sorted((path, audio.sha256) for path, audio in chosen.items()),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    return request


def _hash(files) -> dict[str, AudioFile]:
    """Each file's sha256; the distinct contents by sha256. Up to KEEP_HASHED_BYTES per request, a file keeps the
    bytes just hashed (an upload held in memory: the same object, no copy), so that storing it needs no second
    hash; beyond that, each is read again and hashed again when stored (memory stays one file's worth)."""
    blobs: dict[str, AudioFile] = {}
    kept = 0
    for audio in files:
        data = audio.read()
        audio.sha256 = hashlib.sha256(data).hexdigest()
        if kept + len(data) <= KEEP_HASHED_BYTES:
            audio.read, kept = Hashed(data), kept + len(data)
        blobs.setdefault(audio.sha256, audio)
    return blobs


def validate_audio(request: JobRequest, max_seconds: float) -> None:
    """Check every distinct audio content's header against the caps (recording its duration); refuse the job if
    any header rules the file out. Nothing is decoded here: a small file can decode to gigabytes, and decoding a
    burst of uploads held every request for seconds. The worker decodes, and what only decoding shows (a
    damaged stream, NaN samples) fails that pair with its reason, as in `emopres evaluate`."""
    from core.audio import AudioError, read_header

    problems = []
    for sha, audio in request.blobs.items():
        try:
            request.seconds[sha] = read_header(audio.read(), max_seconds=max_seconds).seconds or 0.0
        except AudioError as error:
            paths = [p for p, a in request.files.items() if a.sha256 == sha]
            problems += [{"path": p, "error": str(error)} for p in paths]
    if problems:
        summary = "; ".join(f"{p['path']}: {p['error']}" for p in problems[:3])
        raise InvalidAudio(
            f"{len(problems)} audio file(s) cannot be evaluated: {summary}{' ...' if len(problems) > 3 else ''}",
            details={"files": problems[:100]},
        )
