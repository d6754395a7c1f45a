"""Turn an upload (manifest + audio fields, or one archive) into a validated job request.

Everything is checked before anything is stored: the manifest, every path, every audio file's
header (once per distinct content; the worker decodes), the caps. Any problem raises an APIError (4xx).
"""

from __future__ import annotations

import hashlib
import json
import stat
import struct
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from app.plumbing.errors import InvalidArchive, InvalidAudio, InvalidManifest, InvalidRequest, TooLarge
from core.blobstore import Hashed
from core.profiles import PROFILES
from emopres_client.pairs import ManifestError, PairSpec, TooManyRows, check_relative_path, parse_pairs
from emopres_client.safe_text import MAX_PATH_CHARS, UnsafeText, check_text, loads_checked

MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
READ_BLOCK = 1024 * 1024
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
        normalised, chosen, name, profile, metadata, use_groups=bool(group_column) or any(p.group for p in normalised)
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


# ---------------------------------------------------------------- archives


def _bounded_copy(source: IO[bytes], target: IO[bytes], limit: int, what: str) -> int:
    total = 0
    while True:
        block = source.read(READ_BLOCK)
        if not block:
            return total
        total += len(block)
        if total > limit:
            raise TooLarge(f"{what} is over the {limit}-byte cap", code="file_too_large", details={"limit": limit})
        target.write(block)


class _Extractor:
    """Writes archive members to a temporary folder, enforcing count and size caps."""

    def __init__(self, folder: Path, settings) -> None:
        self.folder, self.settings = folder, settings
        self.members: dict[str, Path] = {}
        self.total = 0
        self.entries = 0

    def count_entry(self, n: int = 1) -> None:
        """Every entry counts against max_files (folders and links too): refused as soon as one too many is seen."""
        self.entries += n
        if self.entries > self.settings.max_files:
            raise TooLarge(
                f"archive has more than {self.settings.max_files} entries (every file, folder and link counts)",
                code="too_many_files",
                details={"limit": self.settings.max_files},
            )

    def check_header(self, what: str, size: int) -> None:
        """An extended header (tar long name, PAX header; zip entry's name, extra and comment), before it is read."""
        limit = self.settings.max_archive_header_bytes
        if size > limit:
            raise TooLarge(
                f"archive holds a {what} of {size} bytes, over the {limit}-byte cap on a member's header",
                code="archive_header_too_large",
                details={"limit": limit},
            )

    def check_member(self, name: str, declared_size: int) -> str | None:
        if name.endswith("/"):
            return None
        try:
            path = check_relative_path(name)
        except ManifestError as error:
            raise InvalidArchive(f"archive member {name!r}: {error}", details={"member": name}) from None
        limit = self.settings.max_file_bytes if PurePosixPath(path).name not in MANIFEST_NAMES else MAX_MANIFEST_BYTES
        if declared_size > limit:
            raise TooLarge(
                f"archive member {path} is {declared_size} bytes, over the {limit}-byte cap",
                code="file_too_large",
                details={"path": path, "limit": limit},
            )
        self.total += declared_size
        if self.total > self.settings.max_upload_bytes:
            raise TooLarge(
                f"archive content is over the {self.settings.max_upload_bytes}-byte cap",
                details={"limit": self.settings.max_upload_bytes},
            )
        if path in self.members:
            raise InvalidArchive(f"archive holds {path} twice", details={"member": path})
        return path

    def add(self, path: str, stream: IO[bytes], declared_size: int) -> None:
        target = self.folder / str(len(self.members))
        with open(target, "wb") as handle:
            size = _bounded_copy(
                stream,
                handle,
                declared_size if declared_size >= 0 else self.settings.max_file_bytes,
                f"archive member {path}",
            )
        self.members[path] = target
        self.total += size - max(declared_size, 0)


def _scan_zip_directory(handle: IO[bytes], extractor: _Extractor) -> None:
    """Count the central directory's entries and bound each one's header before zipfile reads it: zipfile holds
    the whole directory and one ZipInfo per entry, and reads entries until the directory's declared size is used
    up, whatever count its end record gives. Anything malformed is left to zipfile to report."""
    endrec = zipfile._EndRecData(handle)  # the end record (zip64 too), as zipfile itself finds it
    if endrec is None:
        return
    if endrec[zipfile._ECD_ENTRIES_TOTAL] > extractor.settings.max_files:
        extractor.count_entry(endrec[zipfile._ECD_ENTRIES_TOTAL])
    size, offset = endrec[zipfile._ECD_SIZE], endrec[zipfile._ECD_OFFSET]
    start = endrec[zipfile._ECD_LOCATION] - size  # where zipfile looks (data prepended to the zip included)
    if endrec[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
        start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
    if start < 0 or offset < 0:
        return
    handle.seek(start)
    done = 0
    while done < size:
        fixed = handle.read(46)
        if len(fixed) < 46 or fixed[:4] != b"PK\x01\x02":
            return
        lengths = sum(struct.unpack("<HHH", fixed[28:34]))  # name, extra field, comment
        extractor.count_entry()
        extractor.check_header("zip entry header (name, extra field and comment)", lengths)
        handle.seek(lengths, 1)
        done += 46 + lengths


def _extract_zip(handle: IO[bytes], extractor: _Extractor) -> None:
    try:
        _scan_zip_directory(handle, extractor)
        handle.seek(0)
        archive = zipfile.ZipFile(handle)
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error) as error:
        raise InvalidArchive(f"not a readable zip archive: {error}") from None
    if len(infos) > extractor.settings.max_files:  # the scan above counted them already; kept as a backstop
        extractor.entries = 0
        extractor.count_entry(len(infos))
    for info in infos:
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise InvalidArchive(
                f"archive member {info.filename!r} is a symbolic link (not allowed)", details={"member": info.filename}
            )
        if info.flag_bits & 0x1:
            raise InvalidArchive(f"archive member {info.filename!r} is encrypted", details={"member": info.filename})
        path = extractor.check_member(info.filename, info.file_size)
        if path is None:
            continue
        try:
            with archive.open(info) as stream:
                extractor.add(path, stream, info.file_size)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError) as error:
            raise InvalidArchive(f"archive member {path} cannot be read: {error}") from None


_EXTENDED_HEADERS = {
    tarfile.GNUTYPE_LONGNAME: "GNU long name",
    tarfile.GNUTYPE_LONGLINK: "GNU long link name",
    tarfile.XHDTYPE: "PAX header",
    tarfile.SOLARIS_XHDTYPE: "PAX header",
    tarfile.XGLTYPE: "global PAX header",
}
MAX_EXTENDED_IN_A_ROW = 4  # a member has at most a PAX header, a long name and a long link name (and a global one)


def _bounded_tarinfo(extractor: _Extractor) -> type[tarfile.TarInfo]:
    """A TarInfo class whose extended headers are checked against the caps before tarfile reads them.

    tarfile reads a GNU long name or a PAX header whole (a 1 GiB one from a 1 KB bz2), and processes a chain of
    them by calling itself once per header (thousands in a row: a RecursionError). Its per-type hook
    ``_proc_member`` sees the header's declared size first: bounded there, in a row, and (for the global PAX
    headers, whose keys stay for the rest of the archive) in total; what they hold counts against the upload's
    content cap. Sparse members (whose maps tarfile reads unbounded) are refused: audio is never sparse."""
    state = {"in_a_row": 0, "global": 0}
    limit = extractor.settings.max_archive_header_bytes

    def no_sparse(*args) -> None:
        raise InvalidArchive("archive holds a sparse member (not allowed)")

    class BoundedTarInfo(tarfile.TarInfo):
        def _proc_member(self, archive):
            what = _EXTENDED_HEADERS.get(self.type)
            if what is None:
                state["in_a_row"] = 0
                if self.type == tarfile.GNUTYPE_SPARSE:
                    no_sparse()
                return super()._proc_member(archive)
            state["in_a_row"] += 1
            if state["in_a_row"] > MAX_EXTENDED_IN_A_ROW:
                raise InvalidArchive(f"archive holds more than {MAX_EXTENDED_IN_A_ROW} extended headers in a row")
            extractor.check_header(what, self.size)
            if self.type == tarfile.XGLTYPE:
                state["global"] += self.size
                if state["global"] > limit:
                    raise TooLarge(
                        f"archive's global PAX headers hold more than {limit} bytes together",
                        code="archive_header_too_large",
                        details={"limit": limit},
                    )
            extractor.total += self.size
            if extractor.total > extractor.settings.max_upload_bytes:
                raise TooLarge(
                    f"archive content is over the {extractor.settings.max_upload_bytes}-byte cap",
                    details={"limit": extractor.settings.max_upload_bytes},
                )
            return super()._proc_member(archive)

        _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = no_sparse

    return BoundedTarInfo


def _extract_tar(handle: IO[bytes], extractor: _Extractor) -> None:
    try:
        archive = tarfile.open(fileobj=handle, mode="r:*", tarinfo=_bounded_tarinfo(extractor))
    except (tarfile.TarError, OSError, EOFError) as error:
        raise InvalidArchive(f"not a readable zip or tar archive ({error})") from None
    try:
        for member in archive:
            extractor.count_entry()
            if member.issym() or member.islnk():
                raise InvalidArchive(
                    f"archive member {member.name!r} is a link (not allowed)", details={"member": member.name}
                )
            if member.isdir():
                continue
            if not member.isfile():
                raise InvalidArchive(
                    f"archive member {member.name!r} is not a regular file", details={"member": member.name}
                )
            path = extractor.check_member(member.name, member.size)
            if path is None:
                continue
            stream = archive.extractfile(member)
            extractor.add(path, stream, member.size)
    except (tarfile.TarError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise InvalidArchive(f"archive cannot be read: {error}") from None
    finally:
        archive.close()


def _find_manifest(members: dict[str, Path]) -> tuple[str, str]:
    """(manifest path, root folder): at the top, or inside the one top-level folder."""
    for name in MANIFEST_NAMES:
        if name in members:
            return name, ""
    nested = [p for p in members if PurePosixPath(p).name in MANIFEST_NAMES and len(PurePosixPath(p).parts) == 2]
    if len(nested) == 1:
        return nested[0], str(PurePosixPath(nested[0]).parent)
    raise InvalidArchive(
        f"archive holds no {' or '.join(MANIFEST_NAMES)} at its top (or in its one top folder)", code="missing_manifest"
    )


@contextmanager
def archive_contents(handle: IO[bytes], settings) -> Iterator[tuple[str, bytes, dict[str, AudioFile]]]:
    """Extract a zip or tar (optionally compressed) safely: (manifest name, manifest bytes, audio files)."""
    with tempfile.TemporaryDirectory(prefix="emopres-upload-") as folder:
        extractor = _Extractor(Path(folder), settings)
        handle.seek(0)
        if zipfile.is_zipfile(handle):
            handle.seek(0)
            _extract_zip(handle, extractor)
        else:
            handle.seek(0)
            _extract_tar(handle, extractor)
        manifest, root = _find_manifest(extractor.members)
        files = {}
        for path, stored in extractor.members.items():
            if path == manifest:
                continue
            if root and not path.startswith(root + "/"):
                continue
            relative = str(PurePosixPath(path).relative_to(root)) if root else path
            files[relative] = AudioFile(relative, stored.stat().st_size, stored.read_bytes)
        yield PurePosixPath(manifest).name, extractor.members[manifest].read_bytes(), files
