"""The model folder's lock file: which weights exactly (source, revision, every file's sha256).

Different copies of the same model circulate (Hugging Face vs ModelScope, revisions), and numbers
differ between them. ``emopres models fetch`` writes the lock after a download,
``emopres models lock DIR`` writes it for a folder filled by hand, ``emopres models check``
verifies the folder against it. Everything in it is read off the files themselves (and, after a
fetch, the revision the hub answered); nothing is typed in.

Layout of ``<model dir>/emopres-models.lock.json``::

    {"lock_version": 1, "models": {"<slot name>": {
        "entry": "<file or folder under the model dir>",
        "source": {"kind": "huggingface" | "modelscope" | "local", "repo_id": ..., "endpoint": ...},
        "revision": "<commit the hub resolved>" | null,
        "files": {"<path relative to the entry>": {"sha256": ..., "size": ...}},
        "digest": "<sha256 over the sorted (path, sha256) lines>"}}}

Files under a folder whose name starts with "." (the hub clients' ``.cache/`` bookkeeping) are
not part of a model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from models.runtime.batching import file_sha256

LOCK_NAME = "emopres-models.lock.json"
LOCK_VERSION = 1
LOCAL_SOURCE = {"kind": "local"}


class LockError(ValueError):
    """The lock file is unreadable or of another version; the message is for the user."""


def entry_files(path: Path) -> dict[str, Path]:
    """The files of a model entry (a file, or a folder walked recursively), by path relative to it."""
    path = Path(path)
    if path.is_file():
        return {path.name: path}
    if not path.is_dir():
        return {}
    out = {}
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                full = Path(root) / name
                out[full.relative_to(path).as_posix()] = full
    return out


def files_digest(files: dict[str, dict]) -> str:
    """One sha256 for a set of files: over "path<TAB>sha256" lines, sorted by path."""
    lines = "".join(f"{name}\t{files[name]['sha256']}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def hash_entry(path: Path) -> dict[str, dict]:
    return {
        name: {"sha256": file_sha256(full), "size": full.stat().st_size} for name, full in entry_files(path).items()
    }


def lock_path(model_dir: str | os.PathLike) -> Path:
    return Path(model_dir) / LOCK_NAME


def read_lock(model_dir: str | os.PathLike) -> dict | None:
    """The lock file's content, None when there is none."""
    path = lock_path(model_dir)
    if not path.is_file():
        return None
    try:
        lock = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise LockError(f"cannot read {path}: {error}") from None
    if (
        not isinstance(lock, dict)
        or lock.get("lock_version") != LOCK_VERSION
        or not isinstance(lock.get("models"), dict)
    ):
        raise LockError(f"{path} is not an emopres lock file of version {LOCK_VERSION}")
    return lock


def lock_entry(path: Path, entry: str, source: dict | None = None, revision: str | None = None) -> dict:
    files = hash_entry(path)
    if not files:
        raise FileNotFoundError(f"{path}: no files to lock")
    return {
        "entry": entry,
        "source": dict(source or LOCAL_SOURCE),
        "revision": revision,
        "files": files,
        "digest": files_digest(files),
    }


def write_lock(model_dir: str | os.PathLike, entries: dict[str, dict]) -> dict:
    """Merge ``entries`` (slot name -> :func:`lock_entry`) into the folder's lock file; return the lock."""
    try:
        lock = read_lock(model_dir) or {"lock_version": LOCK_VERSION, "models": {}}
    except LockError:
        lock = {"lock_version": LOCK_VERSION, "models": {}}  # rewritten from the files
    lock["models"].update(entries)
    lock["models"] = dict(sorted(lock["models"].items()))
    path = lock_path(model_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(lock, indent=1) + "\n")
    os.replace(tmp, path)
    return lock


def verify_entry(path: Path, locked: dict | None) -> dict:
    """Compare an entry's files with its lock: status "matches" | "differs" | "not locked" | "missing",
    with the ``changed``, ``missing`` and ``extra`` file names."""
    actual = hash_entry(path)
    if locked is None:
        return {
            "status": "not locked" if actual else "missing",
            "changed": [],
            "missing": [],
            "extra": [],
            "digest": files_digest(actual) if actual else None,
        }
    expected = locked.get("files") or {}
    changed = sorted(n for n in expected if n in actual and actual[n]["sha256"] != expected[n]["sha256"])
    missing = sorted(n for n in expected if n not in actual)
    extra = sorted(n for n in actual if n not in expected)
    status = "matches" if not (changed or missing or extra) else ("missing" if not actual else "differs")
    return {
        "status": status,
        "changed": changed,
        "missing": missing,
        "extra": extra,
        "digest": files_digest(actual) if actual else None,
    }
