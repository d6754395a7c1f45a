import io

import numpy as np
import pytest
import soundfile

from core.audio import SAMPLE_RATE, AudioError, decode_audio, load_audio_file


def encode(wave: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * 220 * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_common_formats_decode_to_16k_mono(fmt):
    decoded = decode_audio(encode(tone(1.0, 16_000), 16_000, fmt))
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert abs(len(decoded) - SAMPLE_RATE) < 0.1 * SAMPLE_RATE  # lossy codecs pad a little


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000, 96_000])
def test_any_rate_is_resampled_keeping_duration_and_pitch(rate):
    decoded = decode_audio(encode(tone(1.0, rate), rate, "WAV"))
    assert len(decoded) == SAMPLE_RATE
    spectrum = np.abs(np.fft.rfft(decoded))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(decoded) - 220) < 2


def test_channels_are_mixed_to_mono():
    left_right = np.stack([tone(0.5, 16_000), -tone(0.5, 16_000)], axis=1)  # cancels when mixed
    assert np.abs(decode_audio(encode(left_right, 16_000, "WAV"))).max() < 1e-4
    six = tone(0.5, 16_000, channels=6)
    assert np.allclose(decode_audio(encode(six, 16_000, "WAV")), tone(0.5, 16_000), atol=1e-4)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"this is not audio at all" * 10, "not decodable"),
        (encode(tone(1.0, 16_000), 16_000, "WAV")[:30], "not decodable"),  # truncated header
    ],
)
def test_bad_bytes_are_refused_with_a_reason(data, message):
    with pytest.raises(AudioError, match=message) as refused:
        decode_audio(data)
    assert "0x" not in str(refused.value) and "BytesIO" not in str(refused.value)  # same bytes, same message


def test_nan_and_inf_samples_are_refused():
    wave = tone(0.5, 16_000).astype(np.float32)
    wave[100] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        decode_audio(encode(wave, 16_000, "WAV", "FLOAT"))
    wave[100] = np.inf
    with pytest.raises(AudioError, match="NaN or infinite"):
        decode_audio(encode(wave, 16_000, "WAV", "FLOAT"))


def test_zero_length_and_duration_cap():
    with pytest.raises(AudioError, match="no samples"):
        decode_audio(encode(np.zeros(0), 16_000, "WAV"))
    with pytest.raises(AudioError, match="over the 2 s cap"):
        decode_audio(encode(tone(3.0, 16_000), 16_000, "WAV"), max_seconds=2)
    assert len(decode_audio(encode(tone(1.0, 16_000), 16_000, "WAV"), max_seconds=2)) == SAMPLE_RATE


def test_load_audio_file_hashes_the_bytes(tmp_path):
    import hashlib

    path = tmp_path / "a.wav"
    path.write_bytes(encode(tone(0.5, 16_000), 16_000, "WAV"))
    _, sha = load_audio_file(path)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(AudioError, match="cannot read"):
        load_audio_file(tmp_path / "missing.wav")
