"""openSMILE eGeMAPSv02: functionals (88 per utterance) for SER, low-level descriptors for acoustic_sim."""
from __future__ import annotations

import numpy as np
import opensmile

SAMPLE_RATE = 16_000
FEATURE_SET = "egemaps-v02"


class Egemaps:
    """Holds the two openSMILE extractors; create once per process and reuse."""

    def __init__(self) -> None:
        self._functionals = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        self._low_level = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.LowLevelDescriptors,
        )

    @property
    def functional_names(self) -> list[str]:
        return list(self._functionals.feature_names)

    @property
    def low_level_names(self) -> list[str]:
        return list(self._low_level.feature_names)

    def functionals(self, wave: np.ndarray) -> np.ndarray:
        """(88,) float32 utterance functionals."""
        values = self._functionals.process_signal(wave, SAMPLE_RATE).to_numpy()
        return values[0].astype(np.float32)

    def low_level(self, wave: np.ndarray) -> np.ndarray:
        """(T, 25) float32 frame descriptors, 10 ms hop."""
        return self._low_level.process_signal(wave, SAMPLE_RATE).to_numpy().astype(np.float32)

    @staticmethod
    def version() -> str:
        return f"opensmile-{opensmile.__version__}"
