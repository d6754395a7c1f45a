"""Length-bucketed batching by total (padded) audio seconds, shared by the paper-profile models.

Every paper model pads a batch to its longest item, so the cost of a batch is
``n_items * longest_item``. :func:`plan_batches` sorts utterances by length and packs
neighbours greedily so that this padded cost stays under a budget given in seconds of
16 kHz audio; a single utterance longer than the budget runs alone. The models make the
padded computation exact (see each model's module docstring), so batching changes speed,
never results.

On CPU the batches (there: one utterance each) run concurrently, one stream per torch thread,
each stream single-threaded (:func:`cpu_streams`): independent utterances on separate cores
beat one utterance's ops split across the cores, which meet at a barrier after every op (two
streams of 200x1024 @ 1024x4096 GEMMs on 2 shared cores: 1.35-1.5x the throughput of one
2-thread stream), and a core taken by another process then slows one stream instead of
stalling every op.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000

#: Default padded-audio budget per forward pass. On GPU bigger batches keep the device busy. On
#: CPU the GEMMs of one utterance already fill the cores and padding only adds work (full-size
#: emotion2vec+ large on 2 cores, 8 utterances of 3.3-4.0 s: 8.3 audio-s/s alone, 8.0 in 12 s
#: batches, 7.2 in 40 s batches; bf16 16.4 / 15.0 / 12.5), so 1 s runs every real utterance alone (and
#: :func:`cpu_streams` of them at once).
DEFAULT_BATCH_SECONDS = {"cpu": 1.0, "cuda": 160.0}
#: Padded-audio budget on CPU in bf16 (fast mode, issue 29). AMX and AVX512-BF16 GEMMs pay only on
#: tall matrices: a 1024x4096 linear in bf16 ran 1.35 TFLOP/s at 180 rows and 1.94 at 1,440 (fp32 0.24-0.32
#: at either) on a 2-core Xeon with AMX, and a 4-layer 1024-wide encoder on 8 x 180 frames 4.2-4.6x
#: fp32; one 3 s utterance is 150 rows. 32 s batches a job's utterances (8 of ~3.6 s) into one forward.
CPU_BF16_BATCH_SECONDS = 32.0

T = TypeVar("T")


def default_batch_seconds(device: str | torch.device, precision: str = "fp32") -> float:
    kind = torch.device(device).type
    if kind == "cpu" and precision == "bf16":
        return CPU_BF16_BATCH_SECONDS
    return DEFAULT_BATCH_SECONDS.get(kind, DEFAULT_BATCH_SECONDS["cpu"])


def plan_batches(
    lengths: Sequence[int],
    max_batch_seconds: float,
    sample_rate: int = SAMPLE_RATE,
    max_items: int | None = None,
) -> list[list[int]]:
    """Group item indices into batches whose padded size stays under ``max_batch_seconds``.

    Items are sorted by length (longest first, ties by index, so the plan is deterministic),
    then packed greedily: an item joins the current batch while
    ``(n + 1) * longest <= budget`` (and ``n + 1 <= max_items``). Returns lists of original
    indices; every index appears exactly once.
    """
    if max_batch_seconds <= 0:
        raise ValueError("max_batch_seconds must be positive")
    if max_items is not None and max_items < 1:
        raise ValueError("max_items must be >= 1")
    budget = float(max_batch_seconds) * sample_rate
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = int(lengths[i])
        if current:
            # Sorted longest first: the batch's padded width is its first item's length.
            fits = (len(current) + 1) * longest <= budget
            if max_items is not None and len(current) >= max_items:
                fits = False
            if not fits:
                batches.append(current)
                current = []
        if not current:
            longest = n
        current.append(i)
    if current:
        batches.append(current)
    return batches


def cpu_streams(device: str | torch.device) -> int:
    """Batches to run at once on ``device``: torch's thread count on CPU (one single-threaded stream
    per thread), 1 elsewhere."""
    return max(1, torch.get_num_threads()) if torch.device(device).type == "cpu" else 1


def _map_streams(fn: Callable, batches: list, streams: int) -> list:
    """``[fn(b) for b in batches]`` on ``streams`` threads that split torch's threads between them.

    torch's thread count is per OS thread (OpenMP), so each stream sets its own share; the calling
    thread's count is set again afterwards, as at::set_num_threads also stores it for new threads."""
    threads = torch.get_num_threads()
    share = max(1, threads // streams)
    try:
        with ThreadPoolExecutor(streams, initializer=torch.set_num_threads, initargs=(share,)) as pool:
            return list(pool.map(fn, batches))
    finally:
        torch.set_num_threads(threads)


def run_batched(
    items: Sequence[T],
    lengths: Sequence[int],
    fn: Callable[[list[T]], list],
    max_batch_seconds: float,
    sample_rate: int = SAMPLE_RATE,
    max_items: int | None = None,
    streams: int = 1,
) -> list:
    """Apply ``fn`` (list of items -> list of per-item results) batch by batch, ``streams`` batches at
    a time (:func:`cpu_streams`; ``fn`` must then be thread-safe); results come back in the order of
    ``items``."""
    out: list = [None] * len(items)
    batches = plan_batches(lengths, max_batch_seconds, sample_rate, max_items)

    def run(batch: list[int]) -> list:
        results = fn([items[i] for i in batch])
        if len(results) != len(batch):
            raise RuntimeError("batched function returned a wrong number of results")
        return results

    streams = min(streams, len(batches))
    done = _map_streams(run, batches, streams) if streams > 1 else [run(b) for b in batches]
    for batch, results in zip(batches, done, strict=True):
        for i, r in zip(batch, results, strict=True):
            out[i] = r
    return out


def pad_waves(
    waves: Sequence[np.ndarray | torch.Tensor], device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D waveforms with zeros: returns ``(B, L_max)`` float32 and ``(B,)`` lengths."""
    tensors = [
        (w if isinstance(w, torch.Tensor) else torch.from_numpy(np.asarray(w, dtype=np.float32)))
        .reshape(-1)
        .to(device=device, dtype=torch.float32)
        for w in waves
    ]
    lengths = torch.tensor([t.numel() for t in tensors], dtype=torch.long, device=device)
    batch = torch.zeros(len(tensors), int(lengths.max()) if len(tensors) else 0, device=device)
    for i, t in enumerate(tensors):
        batch[i, : t.numel()] = t
    return batch, lengths


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """``(B,)`` lengths -> ``(B, T)`` bool mask, True on real (non-padded) positions."""
    max_len = int(lengths.max()) if max_len is None else int(max_len)
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def conv_output_lengths(lengths: torch.Tensor, layers: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Output lengths of a stack of unpadded 1-D convolutions given ``(kernel, stride)`` pairs."""
    out = lengths.clone()
    for kernel, stride in layers:
        out = torch.div(out - kernel, stride, rounding_mode="floor") + 1
    return out.clamp_min(0)


def as_float_waves(waves: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Validate a list of mono 16 kHz waveforms and return them as contiguous float32 1-D arrays."""
    out = []
    for i, w in enumerate(waves):
        a = np.ascontiguousarray(np.asarray(w, dtype=np.float32).reshape(-1))
        if a.size == 0:
            raise ValueError(f"utterance {i} is empty")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"utterance {i} has NaN or infinite samples")
        out.append(a)
    return out


# --------------------------------------------------------------------------------------
# Shared runtime helpers (file hashing, precision) used by every paper-profile model.

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, cached in-process by (path, size, mtime) so reloads stay cheap."""
    p = os.path.realpath(path)
    st = os.stat(p)
    key = (p, st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def autocast_context(device: str | torch.device, precision: str):
    """Autocast context for ``precision`` (a no-op context for fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def count_parameters(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


#: sha256 of published checkpoints that may be unpickled in full if the weights-only loader
#: refuses them (emotion2vec/emotion2vec_plus_large@6c303ba, model.pt).
TRUSTED_PICKLES = frozenset(
    {
        "be501a01f26fcdc7663a062dff86af839afbaef7c4de32f5e42d7e1ad2784da4",
    }
)
TRUST_ENV = "EMOPRES_TRUST_MODEL_PICKLES"


def load_torch_file(path: str | os.PathLike, map_location="cpu", mmap: bool = False):
    """``torch.load`` restricted to tensors and plain containers (no arbitrary code).

    A checkpoint that holds other Python objects is refused, unless its sha256 is a known
    published file (:data:`TRUSTED_PICKLES`) or ``EMOPRES_TRUST_MODEL_PICKLES=1`` says the model
    directory is trusted; then it is unpickled in full.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # UnpicklingError and friends
        trusted = os.environ.get(TRUST_ENV, "") == "1" or file_sha256(path) in TRUSTED_PICKLES
        if trusted:
            logger.warning("%s: not a weights-only checkpoint (%s); unpickling it in full (trusted)", path, e)
            return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
        raise ValueError(
            f"cannot read {path} as a weights-only torch checkpoint ({type(e).__name__}: {e}). If it is the "
            f"published file and you trust it, set {TRUST_ENV}=1 to unpickle it in full."
        ) from e


# --------------------------------------------------------------------------------------
# transformers-format folders (wav2vec2 / WavLM / XLS-R)

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def hf_weight_files(folder: str | os.PathLike) -> list[str]:
    """Weight files of a ``save_pretrained`` folder (single or sharded), sorted."""
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    single = [n for n in HF_WEIGHT_FILES if n in names]
    if single:
        return [os.path.join(folder, single[0])]
    shards = [n for n in names if n.endswith(".safetensors") or (n.startswith("pytorch_model-") and n.endswith(".bin"))]
    return [os.path.join(folder, n) for n in shards]


def hf_missing_files(folder: str | os.PathLike) -> list[str]:
    """What a transformers folder lacks to be loadable (empty list when complete)."""
    if not os.path.isdir(folder):
        return [os.fspath(folder) + "/"]
    missing = []
    if not os.path.isfile(os.path.join(folder, "config.json")):
        missing.append("config.json")
    if not hf_weight_files(folder):
        missing.append("model.safetensors (or pytorch_model.bin)")
    return missing


def hf_weights_sha256(folder: str | os.PathLike) -> str:
    """sha256 of the weights: the file's own hash, or for shards the hash of their hashes."""
    files = hf_weight_files(folder)
    if not files:
        raise FileNotFoundError(f"no weight files in {folder}")
    if len(files) == 1:
        return file_sha256(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def read_do_normalize(folder: str | os.PathLike, default: bool = True) -> bool:
    """``do_normalize`` of a folder's ``preprocessor_config.json`` (the feature extractor's
    per-utterance zero-mean/unit-variance step), ``default`` when the file is absent."""
    import json

    path = os.path.join(folder, "preprocessor_config.json")
    if not os.path.isfile(path):
        return default
    with open(path, encoding="utf-8") as f:
        return bool(json.load(f).get("do_normalize", default))


def zero_mean_unit_var(wave: torch.Tensor) -> torch.Tensor:
    """Per-utterance normalisation of ``Wav2Vec2FeatureExtractor(do_normalize=True)``."""
    return (wave - wave.mean()) / torch.sqrt(wave.var(unbiased=False) + 1e-7)


def hf_frame_lengths(config, lengths: torch.Tensor) -> torch.Tensor:
    """Frames produced by a wav2vec2-style conv feature encoder for ``lengths`` samples."""
    return conv_output_lengths(lengths, list(zip(config.conv_kernel, config.conv_stride, strict=True)))


def hf_min_samples(config) -> int:
    n = 1
    for k, s in reversed(list(zip(config.conv_kernel, config.conv_stride, strict=True))):
        n = (n - 1) * s + k
    return n


def hf_exact_batching(config) -> bool:
    """Padding is invisible to real frames when the conv encoder normalises per frame
    (``feat_extract_norm == "layer"``); the group-norm variant normalises over time."""
    return getattr(config, "feat_extract_norm", "layer") == "layer"


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load report and progress bars while loading (restored afterwards):
    the checkpoints we load carry keys we deliberately drop (e.g. XLS-R's pre-training heads)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
