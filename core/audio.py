"""Audio decoding: any common format, rate and channel count -> 16 kHz mono float32."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16_000
DEFAULT_MAX_SECONDS = 600.0
DECODED_RATE_BUDGET = 96_000  # decoded samples per second of the duration cap: 48 kHz stereo, or 96 kHz mono
MAX_CHANNELS = 32
BLOCK_FRAMES = 1 << 16
UNKNOWN_FRAMES = 2**62  # libsndfile reports SF_COUNT_MAX frames when the header holds no length


class AudioError(ValueError):
    """Audio that cannot be evaluated; the message says why, for the user."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class AudioHeader:
    """What the container header says, read without decoding the samples."""

    frames: int | None  # None: the header does not say (a streamed FLAC); decoding stops at the caps
    rate: int
    channels: int

    @property
    def seconds(self) -> float | None:
        return None if self.frames is None else self.frames / self.rate


def _reason(error: Exception) -> str:
    # libsndfile names the in-memory file object ("Error opening <_io.BytesIO object at 0x...>: ..."):
    # keep only its reason, so the message is the same for the same bytes
    return str(error).rsplit(">: ", 1)[-1]


def sample_budget(max_seconds: float) -> int:
    """Decoded samples (frames x channels) allowed: max_seconds of DECODED_RATE_BUDGET samples per second."""
    return int(max_seconds * DECODED_RATE_BUDGET)


def flac_streaminfo(data: bytes) -> AudioHeader | None:
    """A FLAC's header from its STREAMINFO block (RFC 9639, 8.2: always the first metadata block), or None when
    the bytes do not start with one (then libsndfile reads the header). Why not libsndfile here: opening a FLAC
    starts libFLAC's decoder, which probes the CPU with CPUID every time, an instruction that traps to the
    hypervisor on a virtual machine: ~90 us per file, 15-30 % of the gateway's CPU in a burst of FLAC uploads
    (bench/RESULTS.md, burst round seven). Only the header is checked here, as before: a FLAC whose frames are
    damaged after a sound STREAMINFO is accepted, and the worker fails that pair with its reason."""
    if len(data) < 42 or data[:4] != b"fLaC" or data[4] & 0x7F != 0 or int.from_bytes(data[5:8], "big") != 34:
        return None
    # STREAMINFO bytes 10-17: sample rate (20 bits), channels - 1 (3), bits per sample - 1 (5), total samples (36)
    fields = int.from_bytes(data[8 + 10 : 8 + 18], "big")
    total = fields & ((1 << 36) - 1)
    return AudioHeader(total or None, fields >> 44, ((fields >> 41) & 0x7) + 1)  # total 0: "unknown"


def read_header(data: bytes, *, max_seconds: float | None = None) -> AudioHeader:
    """The header of WAV/FLAC/OGG/MP3 bytes, checked against the caps before anything is decoded: a 1 MB FLAC can
    hold ten minutes of 8 channels at 192 kHz (3.7 GB as float32). AudioError if the header already rules it out."""
    if not data:
        raise AudioError("empty file")
    header = flac_streaminfo(data) or _libsndfile_header(data)
    if header.rate <= 0:
        raise AudioError(f"invalid sample rate {header.rate}")
    if header.channels <= 0 or header.frames == 0:
        raise AudioError("audio has no samples")
    if header.channels > MAX_CHANNELS:
        raise AudioError(f"audio has {header.channels} channels, over the cap of {MAX_CHANNELS}")
    if header.frames is None:
        return header
    limit = max_seconds if max_seconds is not None else DEFAULT_MAX_SECONDS
    seconds = header.frames / header.rate
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"audio is {seconds:.1f} s long, over the {max_seconds:g} s cap")
    samples = header.frames * header.channels
    if samples > sample_budget(limit):
        raise AudioError(
            f"audio holds {samples} samples ({header.seconds:.1f} s x {header.rate} Hz x "
            f"{header.channels} channels), over the cap of {sample_budget(limit)} "
            f"({limit:g} s of {DECODED_RATE_BUDGET} samples per second)"
        )
    return header


def _libsndfile_header(data: bytes) -> AudioHeader:
    try:  # opened, not soundfile.info(): that also formats every field's description (~15 % of the time)
        with soundfile.SoundFile(io.BytesIO(data)) as info:
            frames, rate, channels = int(info.frames), int(info.samplerate), int(info.channels)
    except Exception as error:
        raise AudioError(f"not decodable as audio: {_reason(error)}") from None
    return AudioHeader(None if frames >= UNKNOWN_FRAMES else frames, rate, channels)


def _read_mono(data: bytes, header: AudioHeader, max_seconds: float | None) -> np.ndarray:
    """Decode block by block, down-mixing each block (a block's mean is the whole file's mean, row for row), so
    that memory holds one mono copy and never the channels; stop as soon as the caps are passed, whatever the
    header said."""
    limit = max_seconds if max_seconds is not None else DEFAULT_MAX_SECONDS
    max_frames = sample_budget(limit) // header.channels
    if max_seconds is not None:
        max_frames = min(max_frames, int(max_seconds * header.rate))
    blocks, frames = [], 0
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as stream:
            for block in stream.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True):
                frames += len(block)
                if frames > max_frames:
                    said = "no length" if header.frames is None else f"{header.seconds:.1f} s"
                    raise AudioError(
                        f"audio decodes to more than {max_frames / header.rate:.1f} s, over the cap "
                        f"(its header said {said})"
                    )
                if not np.all(np.isfinite(block)):
                    raise AudioError("audio contains NaN or infinite samples")
                blocks.append(block.mean(axis=1))
    except AudioError:
        raise
    except Exception as error:
        raise AudioError(f"not decodable as audio: {_reason(error)}") from None
    if frames == 0:
        raise AudioError("audio has no samples")
    return np.concatenate(blocks)


def decode_audio(data: bytes, *, max_seconds: float | None = None) -> np.ndarray:
    """Decode bytes of WAV/FLAC/OGG/MP3 to 16 kHz mono float32, or raise AudioError."""
    header = read_header(data, max_seconds=max_seconds)
    mono = _read_mono(data, header, max_seconds)
    if header.rate != SAMPLE_RATE:
        mono = soxr.resample(mono, header.rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def load_audio_file(path, *, max_seconds: float | None = None) -> tuple[np.ndarray, str]:
    """Read a file, returning (16 kHz mono samples, sha256 of the file's bytes)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise AudioError(f"cannot read {path}: {error.strerror}") from None
    return decode_audio(data, max_seconds=max_seconds), sha256_bytes(data)
