"""The ``paper`` profile: emotion2vec+ large, audeering valence-arousal, WavLM ECAPA-TDNN (Vsim),
XLS-R-53 + AutoPCP, read from a local model directory (``EMOPRES_MODEL_DIR``). Nothing is
ever downloaded; see ``docs/paper-models.md`` for what to fetch and where to put it.

Model directory layout (each entry in the model's own published format)::

    $EMOPRES_MODEL_DIR/
      emotion2vec_plus_large/                        funasr: config.yaml, model.pt, tokens.txt
      wav2vec2-large-robust-12-ft-emotion-msp-dim/   transformers: config.json, pytorch_model.bin,
                                                     preprocessor_config.json
      wavlm_large_finetune.pth                       UniSpeech ECAPA-TDNN checkpoint (a file)
      wav2vec2-large-xlsr-53/                        transformers: config.json, pytorch_model.bin,
                                                     preprocessor_config.json
      AutoPCP-multilingual-v2/                       the unzipped AutoPCP-multilingual-v2.zip
                                                     (<name>.config + <name>.pt)
      ser_head/                                      the SER head trained on emotion2vec features (emopres train-ser)
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.profile import Profile
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

PAIR_METRICS = ("emo_sim", "emo_sim_utterance", "va_sim", "va_sim_utterance", "vsim", "autopcp")
LITE_ONLY = "lite profile only (eGeMAPS acoustic similarity)"


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


class PaperProfile(Profile):
    """emotion2vec+ large SER features, emo-sim, va-sim, Vsim and AutoPCP from local weights."""

    name = "paper"

    def __init__(
        self,
        emotion2vec,
        valence_arousal,
        speaker,
        autopcp,
        *,
        model_dir: str = "",
        missing: dict[str, str] | None = None,
        weights: dict[str, dict] | None = None,
    ):
        self.emotion2vec = emotion2vec
        self.valence_arousal = valence_arousal
        self.speaker = speaker
        self.autopcp = autopcp
        self.model_dir = model_dir
        self._missing = dict(missing or {})
        self.weights = dict(weights or {})  # slot -> files_sha256 (every file of it), revision, source (from the lock)

    @classmethod
    def from_model_dir(
        cls,
        model_dir: str | os.PathLike,
        device: str = "cpu",
        fast: bool = False,
        *,
        allow_missing: bool = False,
        max_batch_seconds: float | None = None,
        precision: str | None = None,
    ) -> PaperProfile:
        """Load every paper model from ``model_dir``. A missing model is an error naming what to put
        where, unless ``allow_missing`` (then only emotion2vec is required and the metrics of the
        absent models are reported as unavailable)."""
        from models.paper.autopcp import AutoPCP
        from models.paper.emotion2vec import Emotion2Vec
        from models.paper.speaker import SpeakerEncoder
        from models.paper.valence_arousal import ValenceArousal

        base = Path(model_dir)
        if not base.is_dir():
            raise FileNotFoundError(f"paper model directory {base} does not exist (see `emopres models check`)")
        problems = {s.name: _missing(s, base / s.entry) for s in SLOTS}
        problems = {k: v for k, v in problems.items() if v}
        required = {"emotion2vec_plus_large"} if allow_missing else set(SLOT)
        fatal = {k: v for k, v in problems.items() if k in required}
        if fatal:
            lines = [
                f"  {k}: missing {', '.join(v)} -> put it at {base / SLOT[k].entry} (from {SLOT[k].fetch})"
                for k, v in fatal.items()
            ]
            raise FileNotFoundError(
                "paper profile: models missing in "
                + str(base)
                + ":\n"
                + "\n".join(lines)
                + "\nRun `emopres models check` for the full inventory."
            )
        # fast: each model times fp32 against bf16 on this machine as it loads and keeps the faster
        kw = dict(device=device, fast=fast, precision=precision, max_batch_seconds=max_batch_seconds)
        e2v = Emotion2Vec.from_pretrained(base / SLOT["emotion2vec_plus_large"].entry, **kw)
        va = (
            None
            if "valence_arousal" in problems
            else ValenceArousal.from_pretrained(base / SLOT["valence_arousal"].entry, **kw)
        )
        spk = (
            None
            if "speaker_wavlm_ecapa" in problems
            else SpeakerEncoder.from_pretrained(base / SLOT["speaker_wavlm_ecapa"].entry, **kw)
        )
        pcp = None
        if "xlsr_53" not in problems and "autopcp_comparator" not in problems:
            pcp = AutoPCP.from_pretrained(base / SLOT["xlsr_53"].entry, base / SLOT["autopcp_comparator"].entry, **kw)
        missing = {k: f"model not installed: {base / SLOT[k].entry} ({', '.join(v)})" for k, v in problems.items()}
        return cls(
            e2v,
            va,
            spk,
            pcp,
            model_dir=str(base),
            missing=missing,
            weights=weights_identity(base, [s for s in SLOTS if s.name not in problems]),
        )

    # ------------------------------------------------------------------ metadata
    def networks(self) -> dict[str, object]:
        """The loaded networks by signature tag (each has ``precision`` and ``fast_choice``)."""
        found = {
            "e2v": self.emotion2vec,
            "va": self.valence_arousal,
            "spk": self.speaker,
            "xlsr": self.autopcp.encoder if self.autopcp is not None else None,
        }
        return {tag: net for tag, net in found.items() if net is not None}

    @property
    def precision(self) -> str:
        """The signature's mode: ``fp32`` (exact), or what fast mode chose per network and why."""
        from models.runtime.precision import signature_mode

        nets = self.networks()
        return signature_mode({t: n.fast_choice for t, n in nets.items()}, {t: n.precision for t, n in nets.items()})

    def fast_choices(self) -> dict[str, dict]:
        """Per network: the fast-mode timing and choice (empty in exact mode)."""
        return {tag: net.fast_choice.as_dict() for tag, net in self.networks().items() if net.fast_choice is not None}

    def _loaded(self) -> dict[str, dict]:
        out = {"emotion2vec_plus_large": self.emotion2vec.info()}
        if self.valence_arousal is not None:
            out["valence_arousal"] = self.valence_arousal.info()
        if self.speaker is not None:
            out["speaker_wavlm_ecapa"] = self.speaker.info()
        if self.autopcp is not None:
            out["xlsr_53"] = self.autopcp.encoder.info()
            out["autopcp_comparator"] = self.autopcp.comparator_info()
        return out

    def models_info(self) -> dict[str, dict]:
        return {
            k: {
                "source": v["source"],
                "sha256": v["sha256"],
                "version": v["version"],
                **self.weights.get(k, {"files_sha256": None, "lock": None, "revision": None, "lock_source": None}),
            }
            for k, v in self._loaded().items()
        }

    def signature_parts(self) -> list[str]:
        info = self._loaded()
        parts = []
        for key, tag in (
            ("emotion2vec_plus_large", "e2v"),
            ("valence_arousal", "va"),
            ("speaker_wavlm_ecapa", "spk"),
            ("xlsr_53", "xlsr"),
            ("autopcp_comparator", "pcp"),
        ):
            parts.append(f"{tag}:{info[key]['sha256'][:12]}" if key in info else f"{tag}:none")
        parts.append(f"weights:{weights_signature(self.weights)}")
        parts.append(f"mode:{self.precision}")
        return parts

    def unavailable(self) -> dict[str, str]:
        out = {"acoustic_sim": LITE_ONLY, "acoustic_sim_utterance": LITE_ONLY}
        if self.valence_arousal is None:
            out["va_sim"] = self._missing.get("valence_arousal", "valence-arousal model not loaded")
            out["va_sim_utterance"] = out["va_sim"]
        if self.speaker is None:
            out["vsim"] = self._missing.get("speaker_wavlm_ecapa", "speaker model not loaded")
        if self.autopcp is None:
            out["autopcp"] = (
                self._missing.get("autopcp_comparator") or self._missing.get("xlsr_53") or "AutoPCP not loaded"
            )
        return out

    # ------------------------------------------------------------------ features
    def utterance_features(self, waves: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """All paper features for ``waves`` (16 kHz mono), each model batched over all of them.
        Only numpy arrays (cached on disk by audio sha256 + signature):

        ``ser_input`` (1024,) emotion2vec utterance mean; ``e2v_frames`` (T, 1024);
        ``va_chunks`` (C, 2) (arousal, valence) - 0.5; ``va_frames`` () hidden frames;
        ``va_utterance`` (3,) (arousal, dominance, valence); ``speaker`` (D,); ``pcp`` (1024,).
        """
        waves = list(waves)
        frames, utt = self.emotion2vec.features(waves)
        feats = [{"ser_input": utt[i], "e2v_frames": frames[i]} for i in range(len(waves))]
        if self.valence_arousal is not None:
            for f, r in zip(feats, self.valence_arousal.analyse(waves), strict=True):
                f.update(va_chunks=r.chunks, va_frames=np.asarray(r.n_frames, dtype=np.int64), va_utterance=r.utterance)
        if self.speaker is not None:
            for f, e in zip(feats, self.speaker.embeddings(waves), strict=True):
                f["speaker"] = e
        if self.autopcp is not None:
            for f, e in zip(feats, self.autopcp.embeddings(waves), strict=True):
                f["pcp"] = e
        return feats

    def ser_input(self, feats: dict) -> np.ndarray:
        return np.asarray(feats["ser_input"], dtype=np.float32)

    # ------------------------------------------------------------------ pair metrics
    def pair_scores(self, src: dict, tgt: dict) -> tuple[dict, list[str]]:
        from core.metrics import MetricUndefined
        from core.similarity import frame_similarity, utterance_cosine, vector_cosine

        scores: dict[str, float | None] = {name: None for name in PAIR_METRICS}
        warnings: list[str] = []

        def attempt(name, fn):
            try:
                scores[name] = float(fn())
            except MetricUndefined as e:
                warnings.append(f"{name}: {e.reason}")
            except KeyError as e:
                warnings.append(f"{name}: feature {e.args[0]!r} missing (cached by another profile version?)")

        attempt("emo_sim", lambda: frame_similarity(src["e2v_frames"], tgt["e2v_frames"]))
        attempt("emo_sim_utterance", lambda: utterance_cosine(src["e2v_frames"], tgt["e2v_frames"]))
        if self.valence_arousal is not None:
            from models.paper.valence_arousal import CHUNK_WINDOW

            for side, f in (("source", src), ("target", tgt)):
                n = int(f.get("va_frames", CHUNK_WINDOW))
                if n < CHUNK_WINDOW:
                    warnings.append(
                        f"va_sim: {side} is shorter than one {CHUNK_WINDOW}-frame chunk "
                        f"({n} frames); one chunk over the whole utterance was used"
                    )
            attempt("va_sim", lambda: frame_similarity(src["va_chunks"], tgt["va_chunks"]))
            from models.paper.valence_arousal import utterance_arousal_valence

            attempt(
                "va_sim_utterance",
                lambda: vector_cosine(
                    utterance_arousal_valence(src["va_utterance"]), utterance_arousal_valence(tgt["va_utterance"])
                ),
            )
        if self.speaker is not None:
            attempt("vsim", lambda: vector_cosine(src["speaker"], tgt["speaker"]))
        if self.autopcp is not None:

            def pcp():
                value = self.autopcp.score(np.asarray(src["pcp"]), np.asarray(tgt["pcp"]))
                if not np.isfinite(value):
                    raise MetricUndefined("AutoPCP comparator returned a non-finite score")
                return value

            attempt("autopcp", pcp)
        return scores, warnings
