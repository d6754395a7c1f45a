"""`emopres models fetch`: download the paper models into a model folder, then lock them.

For a machine with internet, run by hand; nothing in the service or the evaluation pipeline
imports this module (a test checks it): emopres never downloads at run time.

Downloads go through the clients made for each hub: ``huggingface_hub.snapshot_download`` (the
default) or, for models that have a mirror there, ModelScope's ``snapshot_download``
(``source="modelscope"``). There is no silent fallback from one to the other: the two can hold
different copies, which is what the lock file is for. Both clients resume an interrupted download
(the partial file is kept in the folder's ``.cache/`` and continued with an HTTP range request)
and draw a progress bar. The lock records the source, the revision (for Hugging Face, the commit
the hub resolved the requested revision to) and every file's sha256, as downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from models.paper.inventory import SLOT, SLOTS
from models.runtime.weights_lock import lock_entry, write_lock

SOURCES = ("huggingface", "modelscope")


@dataclass(frozen=True)
class HubModel:
    repo_id: str  # on huggingface.co
    files: tuple[str, ...]  # what the model folder needs (glob patterns)
    modelscope_id: str | None = None  # the mirror, where one exists


HUB_MODELS: dict[str, HubModel] = {
    "emotion2vec_plus_large": HubModel(
        "emotion2vec/emotion2vec_plus_large",
        ("config.yaml", "model.pt", "tokens.txt", "configuration.json"),
        "iic/emotion2vec_plus_large",
    ),
    "valence_arousal": HubModel(
        "audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim",
        ("config.json", "pytorch_model.bin", "model.safetensors", "preprocessor_config.json"),
    ),
    "xlsr_53": HubModel(
        "facebook/wav2vec2-large-xlsr-53", ("config.json", "pytorch_model.bin", "preprocessor_config.json")
    ),
}


class FetchError(RuntimeError):
    """A download that cannot be done as asked; the message is for the user."""


def by_hand(name: str) -> str:
    """How to get a model that is on no hub (then `emopres models lock`)."""
    slot = SLOT[name]
    return (
        f"{name}: not on a model hub; fetch it by hand from {slot.fetch}, put it at <model dir>/{slot.entry}, "
        f"then run `emopres models lock <model dir>`"
    )


def _huggingface(model: HubModel, dest: Path, revision: str | None, endpoint: str | None) -> tuple[dict, str]:
    from huggingface_hub import HfApi, snapshot_download

    commit = HfApi(endpoint=endpoint).model_info(model.repo_id, revision=revision).sha
    if not commit:
        raise FetchError(f"{model.repo_id}: the hub did not say which commit revision {revision or 'main'} is")
    snapshot_download(
        model.repo_id, revision=commit, local_dir=dest, allow_patterns=list(model.files), endpoint=endpoint
    )
    source = {
        "kind": "huggingface",
        "repo_id": model.repo_id,
        "endpoint": endpoint or "https://huggingface.co",
        "requested_revision": revision or "main",
    }
    return source, commit


def _modelscope(model: HubModel, dest: Path, revision: str | None, endpoint: str | None) -> tuple[dict, None]:
    if model.modelscope_id is None:
        raise FetchError(f"{model.repo_id} has no ModelScope mirror known to emopres; use --source huggingface")
    from modelscope import snapshot_download

    snapshot_download(
        model.modelscope_id, revision=revision, local_dir=str(dest), allow_patterns=list(model.files), endpoint=endpoint
    )
    # The ModelScope client does not hand back the commit it resolved; the lock keeps the request.
    source = {
        "kind": "modelscope",
        "repo_id": model.modelscope_id,
        "endpoint": endpoint or "https://modelscope.cn",
        "requested_revision": revision or "master",
    }
    return source, None


def fetch_models(
    model_dir: str | os.PathLike,
    names: list[str] | None = None,
    *,
    source: str = "huggingface",
    revision: str | None = None,
    endpoint: str | None = None,
    log=print,
) -> dict:
    """Download ``names`` (default: every model on a hub) into ``model_dir`` and lock them.

    Returns ``{"fetched": {name: lock entry}, "by_hand": [message, ...]}``.
    """
    if source not in SOURCES:
        raise FetchError(f"unknown source {source!r} (choose {' or '.join(SOURCES)})")
    unknown = [n for n in names or [] if n not in SLOT]
    if unknown:
        raise FetchError(f"unknown model(s) {', '.join(unknown)} (choose from {', '.join(s.name for s in SLOTS)})")
    wanted = list(names) if names else [s.name for s in SLOTS]
    if revision is not None and len(wanted) != 1:
        raise FetchError("--revision applies to one model at a time: name it")
    base = Path(model_dir)
    base.mkdir(parents=True, exist_ok=True)
    manual = [by_hand(n) for n in wanted if n not in HUB_MODELS]
    fetched = {}
    for name in (n for n in wanted if n in HUB_MODELS):
        model, dest = HUB_MODELS[name], base / SLOT[name].entry
        log(f"{name}: downloading from {source} into {dest}")
        download = _huggingface if source == "huggingface" else _modelscope
        try:
            origin, commit = download(model, dest, revision, endpoint)
        except FetchError:
            raise
        except Exception as error:  # the clients raise many kinds; the user needs the message
            hint = (
                " (or try the mirror: --source modelscope)" if source == "huggingface" and model.modelscope_id else ""
            )
            raise FetchError(f"{name}: download from {source} failed: {type(error).__name__}: {error}{hint}") from None
        entry = lock_entry(dest, SLOT[name].entry, source=origin, revision=commit)
        write_lock(base, {name: entry})  # after each model: an interrupted fetch keeps what is done
        fetched[name] = entry
        log(f"{name}: {len(entry['files'])} file(s) locked" + (f" at revision {commit}" if commit else ""))
    return {"fetched": fetched, "by_hand": manual}


def lock_folder(model_dir: str | os.PathLike, names: list[str] | None = None) -> dict:
    """`emopres models lock`: lock what is in a folder filled by hand (source "local", no revision).

    Models already locked keep their recorded source and revision when their files still match."""
    from models.runtime.weights_lock import read_lock, verify_entry

    base = Path(model_dir)
    if not base.is_dir():
        raise FetchError(f"{base} is not a folder")
    old = (read_lock(base) or {}).get("models", {})
    entries = {}
    for slot in SLOTS:
        if names and slot.name not in names:
            continue
        path = base / slot.entry
        if not path.exists():
            continue
        kept = old.get(slot.name)
        if kept and verify_entry(path, kept)["status"] == "matches":
            entries[slot.name] = kept
        else:
            entries[slot.name] = lock_entry(path, slot.entry)
    if not entries:
        raise FetchError(f"no paper model found in {base} (see `emopres models check`)")
    write_lock(base, entries)
    return entries
