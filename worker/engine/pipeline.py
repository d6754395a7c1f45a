"""The evaluation pipeline.

decode once per file -> features once per file (cached by audio sha256 + feature signature,
process-parallel on CPU) -> SER probabilities -> per-pair rows (the report's `pairs` entries).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from core.audio import DEFAULT_MAX_SECONDS, SAMPLE_RATE, AudioError, decode_audio, sha256_bytes
from core.catalogue import CATALOGUE
from core.feature_cache import FeatureCache
from emopres_client.pairs import PairSpec
from models.prosody.syllables import METHOD as SYLLABLE_METHOD
from models.prosody.syllables import count_in_segments, syllable_times
from models.prosody.vad import SileroVad, pause_rate, speech_seconds
from models.registry import ProfileSpec, create_profile
from models.runtime.threads import machine_cores, pin_threads, threads_per_worker
from models.ser.head import HeadError, SerHead, entropy_uncertainty
from worker.engine.side_reading import SER_INPUT

log = logging.getLogger("emopres.worker")

PAIR_CATALOGUE = tuple(m for m in CATALOGUE if m.kind == "pair" and m.reading == "absolute")  # per pair, per file


# Files per decode window: large enough for full length-bucketed batches, small enough that decoding
# the next window overlaps with inference on this one.
DECODE_WINDOW = 32


@dataclass
class Utterance:
    """One analysed audio file: its features, or why it could not be analysed."""

    sha256: str | None
    features: dict[str, np.ndarray] | None = None
    error: str | None = None


def prosody_signature() -> str:
    return f"vad:{SileroVad.version()}|syl:{SYLLABLE_METHOD}"


def _failed(step: str, error: BaseException) -> str:
    """A pair's failure reason: the step, the exception's type and message (one line)."""
    message = " ".join(str(error).split())
    return f"{step} failed: {type(error).__name__}: {message}"[:500]


def _prosody_features(vad: SileroVad, wave: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "speech_segments": vad.speech_segments(wave),
        "syllable_times": syllable_times(wave),
        "duration_s": np.float64(len(wave) / SAMPLE_RATE),
    }


class UtteranceAnalyzer:
    """A profile's models plus the prosody models, loaded once per process and kept resident."""

    def __init__(
        self,
        spec: ProfileSpec,
        cache_dir=None,
        max_seconds: float | None = DEFAULT_MAX_SECONDS,
        decode_window: int = DECODE_WINDOW,
    ):
        self.spec = spec
        self.decode_window = max(1, decode_window)
        self.profile = create_profile(spec)
        self.vad = SileroVad()
        self.cache = FeatureCache(cache_dir) if cache_dir else None
        self.max_seconds = max_seconds
        self.feature_signature = "|".join(
            [f"profile:{spec.name}", *self.profile.signature_parts(), prosody_signature()]
        )

    def _features_batch(self, waves: list[np.ndarray]) -> list[dict | str]:
        """Profile features for a batch; if the batch fails, retry one by one to isolate the culprit."""
        try:
            return list(self.profile.utterance_features(waves))
        except Exception:
            if len(waves) == 1:
                raise
        results: list[dict | str] = []
        for wave in waves:
            try:
                results.append(self.profile.utterance_features([wave])[0])
            except Exception as error:  # a model failing on one utterance fails only that utterance
                results.append(_failed("feature extraction", error))
        return results

    def _load(self, path: str) -> Utterance | tuple[str, np.ndarray]:
        """Read, hash and decode one file: its cached analysis, an error, or (sha256, wave) to compute."""
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            return Utterance(None, error=f"cannot read audio: {error.strerror or error}")
        sha = sha256_bytes(data)
        cached = self.cache.get(FeatureCache.key(sha, self.feature_signature)) if self.cache else None
        if cached is not None:
            return Utterance(sha, cached)
        try:
            return sha, decode_audio(data, max_seconds=self.max_seconds)
        except AudioError as error:
            return Utterance(sha, error=str(error))
        except Exception as error:  # a decoder failing on one file fails only that file's pairs
            return Utterance(sha, error=_failed("decoding", error))

    def _compute(self, loaded: list[tuple[str, np.ndarray]]) -> list[Utterance]:
        """Profile and prosody features of decoded waves (one batch), cached as they finish."""
        try:
            batch = self._features_batch([wave for _, wave in loaded])
        except Exception as error:
            batch = [_failed("feature extraction", error)] * len(loaded)
        out = []
        for (sha, wave), features in zip(loaded, batch, strict=True):
            if isinstance(features, str):
                out.append(Utterance(sha, error=features))
                continue
            try:  # VAD and syllable nuclei (Praat) refuse some files, e.g. one shorter than Praat's window
                features = {**features, **_prosody_features(self.vad, wave)}
            except Exception as error:
                out.append(Utterance(sha, error=_failed("prosody analysis", error)))
                continue
            if self.cache:
                self.cache.put(FeatureCache.key(sha, self.feature_signature), features)
            out.append(Utterance(sha, features))
        return out

    def analyze(self, paths: list[str]) -> list[Utterance]:
        """Every file's analysis, in order. Files go through in windows of `decode_window`: a reader thread
        decodes the next window while the models run on this one (decoding releases the GIL)."""
        windows = list(_chunks(paths, self.decode_window))
        if len(windows) <= 1:
            return self._analyze_window(self._load_window(paths))
        results: list[Utterance] = []
        with ThreadPoolExecutor(1, thread_name_prefix="emopres-decode") as reader:
            upcoming = reader.submit(self._load_window, windows[0])
            for k in range(len(windows)):
                loaded = upcoming.result()
                if k + 1 < len(windows):
                    upcoming = reader.submit(self._load_window, windows[k + 1])
                results += self._analyze_window(loaded)
        return results

    def _load_window(self, paths: list[str]) -> list:
        return [self._load(path) for path in paths]

    def _analyze_window(self, loaded: list) -> list[Utterance]:
        pending = [i for i, item in enumerate(loaded) if not isinstance(item, Utterance)]
        computed = self._compute([loaded[i] for i in pending]) if pending else []
        results = list(loaded)
        for i, utterance in zip(pending, computed, strict=True):
            results[i] = utterance
        return results


_PROCESS_ANALYZER: UtteranceAnalyzer | None = None


def _init_process(spec: ProfileSpec, cache_dir, max_seconds, threads: int) -> None:
    pin_threads(threads)  # parallelism comes from processes; more threads would oversubscribe the cores
    global _PROCESS_ANALYZER
    _PROCESS_ANALYZER = UtteranceAnalyzer(spec, cache_dir, max_seconds)


def _analyze_in_process(paths: list[str]) -> list[Utterance]:
    assert _PROCESS_ANALYZER is not None
    return _PROCESS_ANALYZER.analyze(paths)


def _started() -> None:
    """A no-op task: submitting one per worker starts the workers (and their model loading) early."""


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # unreadable: fails fast in the worker, with its reason


def schedule_chunks(paths: list[str], chunk_size: int, n_jobs: int) -> list[list[str]]:
    """Chunks for the process pool, longest files first (file size stands in for audio length), the last
    ``n_jobs * chunk_size`` files one per chunk: the pool ends on short single files, so no process
    sits idle while another finishes a long chunk (longest-processing-time-first scheduling)."""
    order = sorted(paths, key=_file_size, reverse=True)  # stable: equal sizes keep their order
    split = max(0, len(order) - n_jobs * chunk_size)
    return list(_chunks(order[:split], chunk_size)) + [[path] for path in order[split:]]


def default_jobs(spec: ProfileSpec) -> int:
    """Lite features are single-threaded C++: one process per core. Paper models batch on one device."""
    return machine_cores() if spec.name == "lite" else 1


class Evaluator:
    """Evaluates pairs with one resident profile, SER head and (optionally) a process pool."""

    def __init__(
        self,
        spec: ProfileSpec,
        head: SerHead,
        *,
        n_jobs: int | None = None,
        cache_dir=None,
        max_seconds: float | None = DEFAULT_MAX_SECONDS,
        chunk_size: int = 4,
        side_head: SerHead | None = None,
    ):
        check_side_head(head, side_head)
        self.spec, self.head, self.side_head, self.chunk_size = spec, head, side_head, chunk_size
        self.n_jobs = default_jobs(spec) if n_jobs is None else max(1, n_jobs)
        self._pool = None
        if self.n_jobs > 1:
            context = multiprocessing.get_context("spawn")  # fork after torch has run threads can deadlock
            self._pool = ProcessPoolExecutor(
                self.n_jobs,
                mp_context=context,
                initializer=_init_process,
                initargs=(spec, cache_dir, max_seconds, threads_per_worker(self.n_jobs)),
            )
            # n_jobs == 1: this process evaluates with every library's default, the whole machine (its share)
            for _ in range(self.n_jobs):  # start every worker now: they load their models while we load ours
                self._pool.submit(_started)
        try:
            self._local = UtteranceAnalyzer(spec, cache_dir, max_seconds)
        except BaseException:
            self.close()
            raise
        self.profile = self._local.profile

    @property
    def feature_signature(self) -> str:
        return self._local.feature_signature

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def analyze_files(self, paths: list[str], progress: Callable[[int], None] | None = None) -> dict[str, Utterance]:
        """Each distinct file analysed once; the result in the order of first appearance in `paths`."""
        unique = list(dict.fromkeys(paths))
        if self._pool:
            chunks = schedule_chunks(unique, self.chunk_size, self.n_jobs)
        else:
            chunks = [sorted(unique, key=_file_size, reverse=True)]  # similar lengths share decode windows
        results: dict[str, Utterance] = {}
        mapped = self._pool.map(_analyze_in_process, chunks) if self._pool else map(self._local.analyze, chunks)
        for chunk, analysed in zip(chunks, mapped, strict=True):
            results.update(zip(chunk, analysed, strict=True))
            if progress:
                progress(len(chunk))
        return {path: results[path] for path in unique}  # the SER batch keeps the files' order

    def predict(self, utterances: dict[str, Utterance]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """SER probabilities per analysed file, in one batch, and why the files that could not be read failed
        (a batch that fails is retried file by file: one bad file fails only its pairs)."""
        return self.predict_with(self.head, utterances)

    def predict_with(
        self, head: SerHead, utterances: dict[str, Utterance]
    ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """:meth:`predict` with the SER head ``head``."""
        inputs, errors = {}, {}
        for key, utterance in utterances.items():
            if utterance.features is None:
                continue
            try:
                inputs[key] = np.asarray(self.profile.ser_input(utterance.features))
            except Exception as error:
                errors[key] = _failed("SER", error)
        if not inputs:
            return {}, errors
        keys = list(inputs)
        try:
            return dict(zip(keys, head.predict_proba(np.stack([inputs[k] for k in keys])), strict=True)), errors
        except Exception as error:
            if len(keys) == 1:
                errors[keys[0]] = _failed("SER", error)
                return {}, errors
        probabilities = {}
        for key in keys:
            try:
                probabilities[key] = head.predict_proba(inputs[key][None, :])[0]
            except Exception as error:
                errors[key] = _failed("SER", error)
        return probabilities, errors

    def evaluate_pairs(
        self,
        pairs: list[PairSpec],
        resolve: Callable[[str], str],
        progress: Callable[[int], None] | None = None,
        utterances: dict[str, Utterance] | None = None,
    ) -> tuple[list[dict], list[dict]]:
        """Per-pair report rows and failures, in the pairs' order (`utterances`: already analysed files)."""
        paths = {p.pair_id: (resolve(p.source), resolve(p.target)) for p in pairs}
        if utterances is None:
            utterances = self.analyze_files([path for both in paths.values() for path in both], progress)
        probabilities, ser_errors = self.predict(utterances)
        rows, failures = [], []
        for pair in pairs:
            source_path, target_path = paths[pair.pair_id]
            source, target = utterances[source_path], utterances[target_path]
            failed = [
                (side, u.error or ser_errors.get(path))
                for side, u, path in (("source", source, source_path), ("target", target, target_path))
            ]
            failed = [(side, error) for side, error in failed if error]
            if failed:
                failures += [{"pair_id": pair.pair_id, "side": side, "error": error} for side, error in failed]
                continue
            try:
                rows.append(self.pair_row(pair, source, target, probabilities[source_path], probabilities[target_path]))
            except Exception as error:  # a metric failing on one pair fails only that pair
                log.warning("pair %s: %s", pair.pair_id, _failed("pair metrics", error))
                failures.append({"pair_id": pair.pair_id, "side": "pair", "error": _failed("pair metrics", error)})
        return rows, failures

    def pair_row(
        self, pair: PairSpec, source: Utterance, target: Utterance, source_probs: np.ndarray, target_probs: np.ndarray
    ) -> dict:
        warnings: list[str] = []
        sides = {}
        for side, utterance, probs in (("source", source, source_probs), ("target", target, target_probs)):
            sides[side], side_warnings = utterance_summary(utterance.features, probs, self.head.classes)
            if self.side_head is not None:  # the side reading needs the whole job: worker/engine/side_reading.py
                sides[side][SER_INPUT] = np.asarray(self.profile.ser_input(utterance.features), np.float32).tolist()
            warnings += [f"{side}: {w}" for w in side_warnings]
        scores, score_warnings = self.profile.pair_scores(source.features, target.features)
        warnings += score_warnings
        row = {
            "pair_id": pair.pair_id,
            "label": pair.label,
            "group": pair.group,
            "source": sides["source"],
            "target": sides["target"],
            "agree": sides["source"]["pred"] == sides["target"]["pred"],
        }
        for m in PAIR_CATALOGUE:  # the profile's model scores, or values from the two sides' SER probabilities
            value = (
                scores.get(m.name) if m.from_probabilities is None else m.from_probabilities(source_probs, target_probs)
            )
            row[m.name] = None if value is None else float(value)
        row["warnings"] = warnings
        return row


def check_side_head(head: SerHead, side_head: SerHead | None) -> None:
    """The side reading is reported next to the absolute one: a per_side head of the same features and classes."""
    if side_head is None:
        return
    if side_head.normalization != "per_side":
        raise HeadError(f"the side head was trained with {side_head.normalization} normalisation; it needs per_side")
    if set(side_head.classes) != set(head.classes) or side_head.feature_set != head.feature_set:
        raise HeadError(
            f"the side head ({side_head.feature_set}, {sorted(side_head.classes)}) does not read what the "
            f"SER head reads ({head.feature_set}, {sorted(head.classes)}): pass a matching --side-head"
        )


def utterance_summary(features: dict, probs: np.ndarray, classes: list[str]) -> tuple[dict, list[str]]:
    segments = np.asarray(features["speech_segments"]).reshape(-1, 2)
    speech = speech_seconds(segments)
    syllables = count_in_segments(np.asarray(features["syllable_times"]), segments)
    warnings = [] if len(segments) else ["no speech found: pause rate and speech rate are undefined"]
    summary = {
        "pred": classes[int(np.argmax(probs))],
        "probs": {c: float(p) for c, p in zip(classes, probs, strict=True)},
        "uncertainty": float(entropy_uncertainty(probs[None, :])[0]),
        "duration_s": float(features["duration_s"]),
        "pause_rate": pause_rate(segments),
        "speech_rate": syllables / speech if speech > 0 else None,
    }
    return summary, warnings
