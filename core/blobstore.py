"""Content-addressed audio: each distinct file is stored once, named by its sha256.

Three back ends, chosen by EMOPRES_BLOB_STORE:

* ``fs`` (default): files ``<blob_dir>/<sha[:2]>/<sha>``, written atomically; api and workers
  share the folder (one machine, or a shared volume).
* ``database``: the bytes live in ``blobs.content``, written in the same transaction as the job,
  so workers on any machine need only the database.
* ``s3``: objects ``<prefix><sha[:2]>/<sha>`` in an S3-compatible bucket (core.blobstore_s3), each
  stored before the transaction that names it; workers on any machine need only the bucket.

With ``database`` and ``s3`` each worker keeps local copies under ``<cache_dir>/blobs`` (content-addressed, so
a copy never goes stale), at most EMOPRES_BLOB_CACHE_BYTES of them (the least recently used go first).
The ``blobs`` table lists every stored blob in all cases; pairs reference it by foreign key.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import delete, exists, func, literal_column, or_, select
from sqlalchemy.orm import Session

from core.blobstore_s3 import BlobStoreUnavailable, S3Blobs
from core.db import Blob, Pair, insert_for

__all__ = ["BlobMissing", "BlobStore", "BlobStoreUnavailable", "CachedBlobs", "FileBlobs", "Hashed"]

INSERT_ROWS = 500  # rows per INSERT (SQLite takes at most 32,766 bound values in one statement)
INSERT_BYTES = 64 * 1024 * 1024  # database store: audio bytes per INSERT


class BlobMissing(FileNotFoundError):
    pass


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _valid_sha(sha256: str) -> str:
    if not SHA256_HEX.fullmatch(sha256):
        raise ValueError(f"not a sha256: {sha256!r}")
    return sha256


class Hashed:
    """A blob reader that returns the very bytes object whose sha256 was taken (immutable): storing it needs no
    second hash. Other readers (a file read again) are hashed again before anything is written."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __call__(self) -> bytes:
        return self.data


def _checked(sha256: str, data: bytes, read: Callable[[], bytes]) -> bytes:
    """`data` (what `read` returned), after checking that it is the blob named `sha256` (a Hashed reader's is)."""
    if not isinstance(read, Hashed) and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"content of blob {sha256[:12]} changed while storing it")
    return data


class FileBlobs:
    """A content-addressed folder of files."""

    def __init__(self, root) -> None:
        self.root = Path(root)
        self._root = str(self.root)

    def path(self, sha256: str) -> Path:
        return Path(self._location(sha256))

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int | None:
        """The stored file's size; None when there is none."""
        try:
            info = os.stat(self._location(sha256))
        except FileNotFoundError:
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None

    def write(self, sha256: str, data: bytes) -> Path:
        """The file, written unless one of this size is there already."""
        if self.size(sha256) != len(data):
            self.replace(sha256, data)
        return self.path(sha256)

    def replace(self, sha256: str, data: bytes) -> None:
        """Write the file, whatever is there."""
        _write_atomically(self._location(sha256), data)

    def _location(self, sha256: str) -> str:
        """The file's path as a string (os calls on strings: a burst of uploads writes and checks thousands)."""
        sha256 = _valid_sha(sha256)
        return os.path.join(self._root, sha256[:2], sha256)

    def read(self, sha256: str) -> bytes | None:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def remove_many(self, shas: Iterable[str]) -> None:
        for sha in shas:
            self.remove(sha)


class CachedBlobs(FileBlobs):
    """A worker's local copies of blobs stored elsewhere (database, bucket), at most `max_bytes` of them: after each
    batch of copies, the least recently used files go until the rest fit (a batch's own files are kept)."""

    def __init__(self, root, max_bytes: int) -> None:
        super().__init__(root)
        self.max_bytes = max_bytes

    def hit(self, sha256: str) -> Path | None:
        """The local copy, marked as just used; None when there is none."""
        location = self._location(sha256)
        try:
            os.utime(location)
        except FileNotFoundError:
            return None
        return Path(location)

    def trim(self, keep: Iterable[str] = ()) -> list[str]:
        """Remove the least recently used copies (not those named in `keep`) until the rest fit; the removed."""
        files = []
        for folder in _entries(self._root):
            if folder.is_dir(follow_symlinks=False):
                files += [e for e in _entries(folder.path) if not e.name.startswith(".")]  # .tmp: being written
        stats = [(entry, entry.stat(follow_symlinks=False)) for entry in files]
        total = sum(info.st_size for _, info in stats)
        keep = set(keep)
        removed = []
        for entry, info in sorted(stats, key=lambda item: item[1].st_mtime_ns):
            if total <= self.max_bytes:
                break
            if entry.name not in keep:
                Path(entry.path).unlink(missing_ok=True)
                total -= info.st_size
                removed.append(entry.name)
        return removed


def _entries(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def _write_atomically(location: str, data: bytes) -> None:
    """Write to a new temporary file beside `location`, fsync, rename: a reader sees the whole file or none."""
    folder = os.path.dirname(location)
    temporary = f"{folder}/.{os.path.basename(location)[:16]}-{os.urandom(6).hex()}.tmp"
    try:
        handle = os.open(temporary, _NEW_FILE, 0o600)
    except FileNotFoundError:  # the first file of its folder
        os.makedirs(folder, exist_ok=True)
        handle = os.open(temporary, _NEW_FILE, 0o600)
    try:
        try:
            with memoryview(data) as view:
                written = 0
                while written < len(view):
                    written += os.write(handle, view[written:])
            os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(temporary, location)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


_WRITERS: ThreadPoolExecutor | None = None
_WRITERS_LOCK = threading.Lock()


def _writers() -> ThreadPoolExecutor:
    global _WRITERS
    with _WRITERS_LOCK:
        if _WRITERS is None:
            _WRITERS = ThreadPoolExecutor(32, thread_name_prefix="emopres-blob-writer")
        return _WRITERS


class BlobStore:
    """Store and fetch audio by sha256; the database transaction is the caller's."""

    def __init__(self, kind: str, blob_dir, local_dir=None, *, remote=None, cache_bytes: int = 2 * 1024**3) -> None:
        self.kind = kind
        # where the bytes are (fs: a folder; s3: a bucket; database: rows, and `files` is unused)
        self.files: FileBlobs | S3Blobs = remote if kind == "s3" else FileBlobs(blob_dir)
        # database and s3 stores: a worker's local copies; fs store: the store itself
        self.local: FileBlobs = (
            CachedBlobs(local_dir or blob_dir, cache_bytes) if kind != "fs" else self._fs(self.files)
        )

    @classmethod
    def from_settings(cls, settings) -> BlobStore:
        local = (settings.feature_cache_path or settings.data_dir) / "blobs" if settings.blob_store != "fs" else None
        remote = None
        if settings.blob_store == "s3":
            remote = S3Blobs(
                settings.s3_bucket, settings.s3_prefix, settings.s3_endpoint_url, settings.s3_timeout_seconds
            )
        return cls(settings.blob_store, settings.blob_path, local, remote=remote, cache_bytes=settings.blob_cache_bytes)

    @staticmethod
    def _fs(files) -> FileBlobs:
        assert isinstance(files, FileBlobs)
        return files

    @staticmethod
    def sha256(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def check(self) -> dict:
        """Readiness of the store (s3: the bucket answers, with these credentials); raises BlobStoreUnavailable."""
        if isinstance(self.files, S3Blobs):
            self.files.check()
            return {"ok": True, "kind": self.kind, "bucket": self.files.bucket}
        return {"ok": True, "kind": self.kind}

    def prepare(self, blobs: dict[str, Callable[[], bytes]]) -> None:
        """Before the transaction. fs: write the files, so their fsyncs happen outside the database's lock (SQLite
        has one writer at a time); put_many then finds them (or writes again one that a concurrent deletion removed
        meanwhile); one of that size on disk is not written again. s3: check each content against its name (a
        Hashed reader's was, where it was hashed), so that a bad one fails its own request, not the transaction
        that uploads it. An orphan file (object) left by a failed transaction is harmless (whole)."""
        if self.kind == "database" or not blobs:
            return
        items = [(_valid_sha(sha), read) for sha, read in blobs.items()]
        # in parallel: concurrent fsyncs share the file system's journal commits (8 small files: ~8x faster than one
        # after the other on ext4), and each is on disk before the job is committed; the content is checked against
        # its name here, in these threads, not in the transaction
        write = self._write_checked if self.kind == "fs" else self._check
        list(_writers().map(lambda item: write(*item), items))

    def _write_checked(self, sha: str, read: Callable[[], bytes]) -> None:
        data = read()
        if self.files.size(sha) != len(data):  # not stored yet (or damaged): hashed only when written
            self.files.replace(sha, _checked(sha, data, read))

    @staticmethod
    def _check(sha: str, read: Callable[[], bytes]) -> None:
        if not isinstance(read, Hashed):
            _checked(sha, read(), read)

    def _put_checked(self, sha: str, read: Callable[[], bytes]) -> None:
        data = read()
        self.files.replace(sha, _checked(sha, data, read))

    @staticmethod
    def _listed(session: Session, shas: list[str]) -> set[str]:
        """Those of `shas` that have a blob row."""
        listed: set[str] = set()
        for start in range(0, len(shas), INSERT_ROWS):
            listed.update(
                session.scalars(select(Blob.sha256).where(Blob.sha256.in_(shas[start : start + INSERT_ROWS])))
            )
        return listed

    def put_many(self, session: Session, blobs: dict[str, Callable[[], bytes]]) -> None:
        """Record blobs (sha256 -> reader of its bytes) in this transaction; then, fs: write the files not on disk
        (prepare wrote and checked them); s3: upload the objects of the rows this insert created (a row that was
        there already is a committed one, now locked, whose object is there: not sent again, not even asked for).
        A file or object is only ever written after its content is checked, and before the commit.

        The row insert takes a row lock (ON CONFLICT DO UPDATE), so a concurrent job deletion cannot remove a blob
        that this transaction is about to reference; what a deletion committed before it removed is seen by the
        check that follows the insert (fs: a stat each; s3: the row is created again, so its object is uploaded).
        """
        rows, held = [], 0
        created: set[str] | None = None
        if self.kind == "s3":
            postgres = session.get_bind().dialect.name == "postgresql"
            # PostgreSQL: the insert says which rows it created; SQLite: one writer, so the rows not listed now
            created = set() if postgres else set(blobs) - self._listed(session, sorted(blobs))
        for sha, read in sorted(blobs.items()):  # one order for every transaction: concurrent jobs never deadlock
            data = read()
            if self.kind == "database":
                _checked(sha, data, read)
            rows.append(
                {"sha256": _valid_sha(sha), "size": len(data), "content": data if self.kind == "database" else None}
            )
            held += len(data) if self.kind == "database" else 0
            if len(rows) >= INSERT_ROWS or held >= INSERT_BYTES:
                self._insert(session, rows, created if self.kind == "s3" and postgres else None)
                rows, held = [], 0
        self._insert(session, rows, created if self.kind == "s3" and postgres else None)
        if created is not None:  # one round trip each: overlapped
            list(_writers().map(lambda sha: self._put_checked(sha, blobs[sha]), sorted(created)))
        elif self.kind == "fs":  # a stat each
            for sha, read in sorted(blobs.items()):
                self._write_checked(sha, read)

    @staticmethod
    def _insert(session: Session, rows: list[dict], created: set[str] | None = None) -> None:
        """One executemany of one statement (compiled once, whatever the number of rows; PostgreSQL: pipelined).
        With `created` (PostgreSQL): the rows it created, not found there, are added to it."""
        if rows:
            statement = insert_for(session, Blob.__table__)
            statement = statement.on_conflict_do_update(
                index_elements=["sha256"], set_={"size": statement.excluded.size}
            )
            if created is None:
                session.execute(statement, rows)
                return
            # xmax = 0: a row version this statement inserted (an updated one carries this transaction's id)
            statement = statement.returning(Blob.__table__.c.sha256, literal_column("xmax = 0"))
            created.update(sha for sha, new in session.execute(statement, rows) if new)

    def local_path(self, session_factory, sha256: str) -> Path:
        """A local file holding the blob (database and s3 stores: fetched once, then kept while the cache holds
        it)."""
        return self.local_paths(session_factory, [sha256])[sha256]

    def local_paths(self, session_factory, shas: Iterable[str]) -> dict[str, Path]:
        """Local files holding these blobs (one chunk's): the missing copies fetched, then the cache trimmed to its
        bound (these kept). BlobMissing for one that is stored nowhere; BlobStoreUnavailable while the bucket is."""
        shas = list(dict.fromkeys(shas))
        if not isinstance(self.local, CachedBlobs):
            paths = {sha: self.local.path(sha) for sha in shas}
            for sha, path in paths.items():
                if not path.is_file():
                    raise BlobMissing(f"audio blob {sha[:12]} is missing from {self.local.root}")
            return paths
        paths, fetched = {}, False
        for sha in shas:
            hit = self.local.hit(sha)
            if hit is None:
                hit, fetched = self.local.write(sha, self._fetch(session_factory, sha)), True
            paths[sha] = hit
        if fetched:
            self.local.trim(keep=shas)
        return paths

    def _fetch(self, session_factory, sha256: str) -> bytes:
        if isinstance(self.files, S3Blobs):
            content = self.files.read(sha256)
            where = self.files.where
            if content is not None and self.sha256(content) != sha256:
                raise BlobMissing(f"audio blob {sha256[:12]} in {where} does not have the content its name says")
        else:
            with session_factory() as session:
                content = session.scalar(select(Blob.content).where(Blob.sha256 == sha256))
            where = "the database"
        if content is None:
            raise BlobMissing(f"audio blob {sha256[:12]} is missing from {where}")
        return content

    def stored_size(self, session: Session, sha256: str) -> int | None:
        """The stored blob's size, without reading it; None when there is none."""
        if self.kind == "database":
            return session.scalar(select(func.length(Blob.content)).where(Blob.sha256 == sha256))
        return self.files.size(sha256)

    def read(self, session: Session, sha256: str) -> bytes | None:
        """The stored blob's bytes (a worker's local copy when it has one); None when there is none."""
        if self.kind != "fs" and (copy := self.local.read(sha256)) is not None:
            return copy
        if self.kind == "database":
            content = session.scalar(select(Blob.content).where(Blob.sha256 == sha256))
            return None if content is None else bytes(content)
        return self.files.read(sha256)

    def delete_unreferenced(self, session: Session, candidates: set[str]) -> list[str]:
        """Delete blobs among `candidates` that no pair references (same transaction); return them."""
        if not candidates:
            return []
        referenced = exists().where(or_(Pair.source_sha256 == Blob.sha256, Pair.target_sha256 == Blob.sha256))
        gone = list(
            session.scalars(delete(Blob).where(Blob.sha256.in_(sorted(candidates)), ~referenced).returning(Blob.sha256))
        )
        return gone

    def remove_files(self, shas: list[str]) -> None:
        """Remove the files (objects) of deleted blob rows, and this host's local copies."""
        self.files.remove_many(shas)
        if self.local is not self.files:
            self.local.remove_many(shas)
