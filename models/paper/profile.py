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

import os
from pathlib import Path

import numpy as np

from models.paper.inventory import SLOT, SLOTS, _missing, weights_identity, weights_signature
from models.profile import Profile

PAIR_METRICS = ("emo_sim", "emo_sim_utterance", "va_sim", "va_sim_utterance", "vsim", "autopcp")
LITE_ONLY = "lite profile only (eGeMAPS acoustic similarity)"


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
