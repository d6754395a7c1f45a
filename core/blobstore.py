"""Content-addressed audio: each distinct file is stored once, named by its sha256.

Two back ends, chosen by EMOPRES_BLOB_STORE:

* ``fs`` (default): files ``<blob_dir>/<sha[:2]>/<sha>``, written atomically; api and workers
  share the folder (one machine, or a shared volume).
* ``database``: the bytes live in ``blobs.content``, written in the same transaction as the job,
  so workers on any machine need only the database; each worker keeps a local copy under
  ``<cache_dir>/blobs`` (content-addressed, so a copy never goes stale).

The ``blobs`` table lists every stored blob in both cases; pairs reference it by foreign key.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import delete, exists, or_, select
from sqlalchemy.orm import Session

from core.db import Blob, Pair, insert_for

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

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)


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

    def __init__(self, kind: str, blob_dir, local_dir=None) -> None:
        self.kind = kind
        self.files = FileBlobs(blob_dir)
        # database store: a worker's local copies; fs store: the store itself
        self.local = FileBlobs(local_dir) if kind == "database" and local_dir else self.files

    @classmethod
    def from_settings(cls, settings) -> BlobStore:
        local = (
            (settings.feature_cache_path or settings.data_dir) / "blobs" if settings.blob_store == "database" else None
        )
        return cls(settings.blob_store, settings.blob_path, local)

    @staticmethod
    def sha256(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def prepare(self, blobs: dict[str, Callable[[], bytes]]) -> None:
        """fs: write the files before the transaction, so their fsyncs happen outside the database's lock
        (SQLite has one writer at a time); put_many then finds them (or writes again one that a concurrent
        deletion removed meanwhile). An orphan file left by a failed transaction is harmless and reused."""
        if self.kind == "fs" and blobs:
            # in parallel: concurrent fsyncs share the file system's journal commits (8 small files: ~8x faster
            # than one after the other on ext4), and each file is still on disk before the job is committed;
            # the content is checked against its name here, in these threads, not in the transaction (a Hashed
            # reader's was, where it was hashed)
            items = [(_valid_sha(sha), read) for sha, read in blobs.items()]
            list(_writers().map(lambda item: self._write_checked(*item), items))

    def _write_checked(self, sha: str, read: Callable[[], bytes]) -> None:
        data = read()
        if self.files.size(sha) != len(data):  # not on disk yet (or damaged): hashed only when written
            self.files.replace(sha, _checked(sha, data, read))

    def put_many(self, session: Session, blobs: dict[str, Callable[[], bytes]]) -> None:
        """Record blobs (sha256 -> reader of its bytes) in this transaction; fs: write the files now unless on disk
        already (prepare wrote and checked them; a file is only ever written after its content is checked).

        The row insert takes a row lock (ON CONFLICT DO UPDATE), so a concurrent job deletion
        cannot remove a blob that this transaction is about to reference.
        """
        rows, held = [], 0
        for sha, read in sorted(blobs.items()):  # one order for every transaction: concurrent jobs never deadlock
            data = read()
            if self.kind == "database" or self.files.size(_valid_sha(sha)) != len(data):
                _checked(sha, data, read)  # a file on disk with this size was checked when it was written
                if self.kind == "fs":
                    self.files.replace(sha, data)  # not (or no longer) on disk: a concurrent deletion removed it
            rows.append(
                {"sha256": _valid_sha(sha), "size": len(data), "content": data if self.kind == "database" else None}
            )
            held += len(data) if self.kind == "database" else 0
            if len(rows) >= INSERT_ROWS or held >= INSERT_BYTES:
                self._insert(session, rows)
                rows, held = [], 0
        self._insert(session, rows)

    @staticmethod
    def _insert(session: Session, rows: list[dict]) -> None:
        """One executemany of one statement (compiled once, whatever the number of rows; PostgreSQL: pipelined)."""
        if rows:
            statement = insert_for(session, Blob.__table__)
            statement = statement.on_conflict_do_update(
                index_elements=["sha256"], set_={"size": statement.excluded.size}
            )
            session.execute(statement, rows)

    def local_path(self, session_factory, sha256: str) -> Path:
        """A local file holding the blob (database store: fetched once, then kept)."""
        path = self.local.path(sha256)
        if path.is_file():
            return path
        if self.kind == "fs":
            raise BlobMissing(f"audio blob {sha256[:12]} is missing from {self.files.root}")
        with session_factory() as session:
            content = session.scalar(select(Blob.content).where(Blob.sha256 == sha256))
        if content is None:
            raise BlobMissing(f"audio blob {sha256[:12]} is missing from the database")
        return self.local.write(sha256, content)

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
        for sha in shas:
            self.files.remove(sha)
            if self.local is not self.files:
                self.local.remove(sha)
