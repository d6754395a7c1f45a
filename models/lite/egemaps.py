"""openSMILE eGeMAPSv02: functionals (88 per utterance) for SER, low-level descriptors for acoustic_sim.

Both levels come from one openSMILE run: opensmile's SMILEapi with its shipped two-sink output
configuration (standard_external_data_output_multi), instead of two runs that would compute the
same descriptors twice.
"""

from __future__ import annotations

import os

import numpy as np
import opensmile
from opensmile.core.config import config as smile_config
from opensmile.core.lib import OpenSMILE

SAMPLE_RATE = 16_000
FEATURE_SET = "egemaps-v02"
_LLD_SINK, _FUNCTIONALS_SINK = "extsinklld", "extsinkfunc"


class Egemaps:
    """eGeMAPSv02 extractor; create once per process and reuse."""

    def __init__(self) -> None:
        reference = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
        )
        self._config_path = reference.config_path
        root = reference.default_config_root
        self._options = {
            "source": os.path.join(root, smile_config.EXTERNAL_INPUT_CONFIG),
            "sink": os.path.join(root, smile_config.EXTERNAL_OUTPUT_MULTI_CONFIG),
            "bufferModeRbConf": os.path.join(root, "shared/BufferModeRb.conf.inc"),
            "frameModeFunctionalsConf": os.path.join(root, "shared/FrameModeFunctionals.conf.inc"),
            "sampleRate": SAMPLE_RATE,
            "nBits": 16,
        }
        self.low_level_names = list(
            opensmile.Smile(
                feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
            ).feature_names
        )

    def extract(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((88,) utterance functionals, (T, 25) frame descriptors at a 10 ms hop), float32."""
        pcm = (np.clip(wave, -1.0, 32767 / 32768) * 32768).astype(np.int16)  # openSMILE reads 16-bit PCM
        frames: dict[str, list[np.ndarray]] = {_LLD_SINK: [], _FUNCTIONALS_SINK: []}
        smile = OpenSMILE()
        smile.initialize(config_file=self._config_path, options=self._options, loglevel=0)
        try:
            for sink, rows in frames.items():
                smile.external_sink_set_callback_ex(sink, lambda data, meta, rows=rows: rows.append(data.copy()))
            smile.external_audio_source_write_data(smile_config.EXTERNAL_SOURCE_COMPONENT, bytes(pcm))
            smile.external_audio_source_set_eoi(smile_config.EXTERNAL_SOURCE_COMPONENT)
            smile.run()
        finally:
            smile.free()
        functionals = frames[_FUNCTIONALS_SINK]
        if not functionals:
            raise ValueError("audio too short for eGeMAPS functionals")
        low_level = np.asarray(frames[_LLD_SINK], np.float32).reshape(-1, len(self.low_level_names))
        return np.asarray(functionals[0], np.float32).reshape(-1), low_level

    def functionals(self, wave: np.ndarray) -> np.ndarray:
        return self.extract(wave)[0]

    @staticmethod
    def version() -> str:
        return f"opensmile-{opensmile.__version__}"
