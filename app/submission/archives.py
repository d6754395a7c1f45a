"""Unpack an uploaded zip or tar archive safely: member names, counts, sizes and headers bounded before reading."""

from __future__ import annotations

import stat
import struct
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from app.plumbing.errors import InvalidArchive, TooLarge
from app.submission.intake import MANIFEST_NAMES, MAX_MANIFEST_BYTES, AudioFile
from emopres_client.pairs import ManifestError, check_relative_path

READ_BLOCK = 1024 * 1024


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
