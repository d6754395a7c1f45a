"""On-disk per-utterance feature cache, keyed by audio sha256 and the feature signature.

Entries are .npz files of plain arrays (loaded without pickle), written atomically so that
several worker processes can share one directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("emopres.worker")


def default_cache_dir() -> Path:
    """$EMOPRES_CACHE_DIR, else $XDG_CACHE_HOME/emopres/features (~/.cache/emopres/features)."""
    if os.environ.get("EMOPRES_CACHE_DIR"):
        return Path(os.environ["EMOPRES_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "emopres" / "features"


class FeatureCache:
    def __init__(self, directory) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # every entry is a miss (put logs why)
            log.warning("feature cache: cannot create %s: %s", self.directory, error)

    @staticmethod
    def key(audio_sha256: str, feature_signature: str) -> str:
        return hashlib.sha256(f"{audio_sha256}|{feature_signature}".encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        path = self._path(key)
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError):
            return None

    def put(self, key: str, features: dict[str, np.ndarray]) -> None:
        """Store an entry; a write that fails (a full disk, a read-only or vanished folder: any OSError) is logged
        and forgotten: the entry is a miss next time, the evaluation goes on."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        except OSError as error:
            log.warning("feature cache: cannot write %s: %s", path, error)
            return
        try:
            with os.fdopen(handle, "wb") as stream:
                arrays: dict[str, Any] = {k: np.asarray(v) for k, v in features.items()}
                np.savez(stream, **arrays)
            os.replace(temporary, path)
        except OSError as error:
            Path(temporary).unlink(missing_ok=True)
            log.warning("feature cache: cannot write %s: %s", path, error)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
