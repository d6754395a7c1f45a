"""The paper profile's model inventory: its model slots, `emopres models check`, the lock, the weights' identity."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.runtime.batching import file_sha256, hf_missing_files, hf_weight_files, hf_weights_sha256, load_torch_file
from models.runtime.weights_lock import LOCK_NAME

logger = logging.getLogger(__name__)


VA_LICENCE = (
    "CC BY-NC-SA 4.0 (non-commercial, share-alike; the model card of "
    "audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim)"
)
LICENCE_UNKNOWN = "not recorded by emopres: read the model's page before use"


@dataclass(frozen=True)
class ModelSlot:
    name: str  # key in models_info / check output
    entry: str  # file or folder name under the model directory
    kind: str  # "funasr" | "transformers" | "unispeech" | "autopcp"
    fetch: str  # where a user with internet gets it
    metrics: tuple[str, ...]  # metrics that need it
    licence: str | None = None  # None: not recorded here (read the model's page)


SLOTS: tuple[ModelSlot, ...] = (
    ModelSlot(
        "emotion2vec_plus_large",
        "emotion2vec_plus_large",
        "funasr",
        "https://huggingface.co/emotion2vec/emotion2vec_plus_large (or ModelScope iic/emotion2vec_plus_large): "
        "config.yaml, model.pt, tokens.txt, configuration.json",
        ("ser", "emo_sim", "emo_sim_utterance"),
    ),
    ModelSlot(
        "valence_arousal",
        "wav2vec2-large-robust-12-ft-emotion-msp-dim",
        "transformers",
        "https://huggingface.co/audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim: "
        "config.json, pytorch_model.bin (or model.safetensors), preprocessor_config.json",
        ("va_sim", "va_sim_utterance"),
        licence=VA_LICENCE,
    ),
    ModelSlot(
        "speaker_wavlm_ecapa",
        "wavlm_large_finetune.pth",
        "unispeech",
        "UniSpeech downstreams/speaker_verification README, 'WavLM large' row, fine-tuned checkpoint "
        "wavlm_large_finetune.pth (Google Drive link there; the one Seamless/stopes VSim recommends)",
        ("vsim",),
    ),
    ModelSlot(
        "xlsr_53",
        "wav2vec2-large-xlsr-53",
        "transformers",
        "https://huggingface.co/facebook/wav2vec2-large-xlsr-53: "
        "config.json, pytorch_model.bin, preprocessor_config.json",
        ("autopcp",),
    ),
    ModelSlot(
        "autopcp_comparator",
        "AutoPCP-multilingual-v2",
        "autopcp",
        "https://dl.fbaipublicfiles.com/speech_expressivity_evaluation/AutoPCP-multilingual-v2.zip, unzipped here",
        ("autopcp",),
    ),
)
SLOT = {s.name: s for s in SLOTS}


def _missing(slot: ModelSlot, path: Path) -> list[str]:
    """What is missing for ``slot`` at ``path`` (empty list when present)."""
    if slot.kind == "funasr":
        from models.paper.emotion2vec import missing_files

        return missing_files(path)
    if slot.kind == "transformers":
        return hf_missing_files(path)
    if slot.kind == "unispeech":
        return [] if path.is_file() else [path.name]
    if slot.kind == "autopcp":
        from models.paper.autopcp import find_comparator_files

        try:
            find_comparator_files(path)
            return []
        except FileNotFoundError:
            return [f"{path.name}/ with <name>.config + <name>.pt"]
    raise AssertionError(slot.kind)


def _weights_files(slot: ModelSlot, path: Path) -> list[Path]:
    if slot.kind == "funasr":
        from models.paper.emotion2vec import resolve_files

        return [resolve_files(path)["model"]]
    if slot.kind == "transformers":
        return [Path(p) for p in hf_weight_files(path)]
    if slot.kind == "unispeech":
        return [path]
    from models.paper.autopcp import find_comparator_files

    return [find_comparator_files(path)[1]]


def _sha256(slot: ModelSlot, path: Path) -> str:
    if slot.kind == "transformers":
        return hf_weights_sha256(path)
    return file_sha256(_weights_files(slot, path)[0])


def _count_parameters(files: Sequence[Path]) -> int:
    """Floating-point parameters stored in checkpoint files, read without building the model."""
    import torch

    total = 0
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as handle:
                for k in handle.keys():
                    sl = handle.get_slice(k)
                    if sl.get_dtype().startswith(("F", "BF")):
                        total += int(np.prod(sl.get_shape()))
            continue
        obj = load_torch_file(f, mmap=True)
        if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
            obj = obj["model"]  # funasr / UniSpeech wrap the state dict; skip optimizer leftovers
        stack = [obj]
        while stack:
            o = stack.pop()
            if isinstance(o, torch.Tensor):
                if o.is_floating_point():
                    total += o.numel()
            elif isinstance(o, dict):
                stack.extend(o.values())
            elif isinstance(o, (list, tuple)):
                stack.extend(o)
    return total


def _lock_differences(lock: dict) -> str:
    return "; ".join(f"{key}: {', '.join(lock[key])}" for key in ("changed", "missing", "extra") if lock[key])


def _check_lock(base: Path | None, rows: list[dict]) -> None:
    """Each row's ``lock``: the folder's files against the lock file (status, source, revision, differences)."""
    from models.runtime.weights_lock import LockError, read_lock, verify_entry

    try:
        lock = read_lock(base) if base else None
        error = None
    except LockError as e:
        lock, error = None, str(e)
    for row, slot in zip(rows, SLOTS, strict=True):
        locked = (lock or {}).get("models", {}).get(slot.name)
        result = (
            verify_entry(base / slot.entry, locked)
            if base
            else {"status": "missing", "changed": [], "missing": [], "extra": [], "digest": None}
        )
        if error:
            result["status"] = "unreadable lock"
            result["error"] = error
        result["source"] = (locked or {}).get("source")
        result["revision"] = (locked or {}).get("revision")
        row["lock"] = result


def lock_verified(rows: list[dict]) -> bool:
    """Every present model matches the lock file (no lock file at all also passes: nothing to verify)."""
    statuses = {row["lock"]["status"] for row in rows if row["status"] == "present"}
    if statuses <= {"not locked"}:
        return True
    return statuses <= {"matches"}


def weights_identity(base: Path, slots: Sequence[ModelSlot]) -> dict[str, dict]:
    """Per loaded slot: the sha256 over every file of it (``files_sha256``, as in the lock), and the
    lock's source and revision when the files match the lock (``lock``: matches | differs | not locked)."""
    from models.runtime.weights_lock import LockError, read_lock, verify_entry

    try:
        lock = read_lock(base) or {"models": {}}
    except LockError as error:
        logger.warning("%s", error)
        lock = {"models": {}}
    out = {}
    for slot in slots:
        locked = lock["models"].get(slot.name)
        result = verify_entry(base / slot.entry, locked)
        matches = result["status"] == "matches"
        out[slot.name] = {
            "files_sha256": result["digest"],
            "lock": result["status"],
            "revision": locked.get("revision") if matches else None,
            "lock_source": locked.get("source") if matches else None,
        }
    return out


def weights_signature(weights: dict[str, dict]) -> str:
    """12 hex digits naming every file of every loaded model ("none" when nothing is known)."""
    if not weights:
        return "none"
    lines = "".join(f"{name}\t{weights[name]['files_sha256']}\n" for name in sorted(weights))
    return hashlib.sha256(lines.encode()).hexdigest()[:12]


def check_models(model_dir: str | os.PathLike | None) -> list[dict]:
    """Inventory for ``emopres models check``: one dict per model with ``name``, ``present``
    (bool), ``status`` ("present" | "missing" | "unreadable"), ``path``, ``sha256``,
    ``parameters`` (floating-point values stored in the weights file), ``missing`` (files),
    ``metrics`` (what needs it), ``put`` (where it goes), ``fetch`` (where from), ``licence``, ``error`` and
    ``hint`` (one line saying what to do; None when present)."""
    base = Path(model_dir) if model_dir else None
    rows = []
    for slot in SLOTS:
        path = base / slot.entry if base else Path(slot.entry)
        row = {
            "name": slot.name,
            "path": str(path),
            "status": "missing",
            "sha256": None,
            "parameters": None,
            "missing": [],
            "metrics": list(slot.metrics),
            "put": f"$EMOPRES_MODEL_DIR/{slot.entry}" + ("" if slot.kind == "unispeech" else "/"),
            "fetch": slot.fetch,
            "licence": slot.licence or LICENCE_UNKNOWN,
            "error": None,
        }
        if base is None:
            row["missing"] = ["EMOPRES_MODEL_DIR is not set"]
            rows.append(row)
            continue
        row["missing"] = _missing(slot, path)
        if not row["missing"]:
            try:
                row["sha256"] = _sha256(slot, path)
                row["parameters"] = _count_parameters(_weights_files(slot, path))
                row["status"] = "present"
            except Exception as e:  # a corrupt or foreign file: say so, keep checking the rest
                row["status"] = "unreadable"
                row["error"] = f"{type(e).__name__}: {e}"
        rows.append(row)
    _check_lock(base, rows)
    for row in rows:
        row["present"] = row["status"] == "present"
        lock = row["lock"]
        if row["status"] == "present" and lock["status"] == "differs":
            row["hint"] = (
                f"differs from {LOCK_NAME} ({_lock_differences(lock)}): fetch it again "
                f"(`emopres models fetch {row['name']}`), or `emopres models lock` if you changed it on purpose"
            )
        elif row["status"] == "missing":
            row["hint"] = f"missing {', '.join(row['missing'])}: put it at {row['put']} (get it from {row['fetch']})"
        elif row["status"] == "unreadable":
            row["hint"] = f"cannot read it ({row['error']}): replace it with the published files (from {row['fetch']})"
        else:
            row["hint"] = None
    return rows
