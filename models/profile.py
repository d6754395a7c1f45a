"""The Profile interface: what the pipeline asks of a set of models (lite, paper).

A profile turns 16 kHz mono waves into per-utterance features (numpy arrays only: they are cached on
disk by audio sha256 and the profile's signature), gives the SER head its input from them, and scores
a (source, target) pair with its own models. The pair metric names it returns are catalogue names
(core.catalogue); a catalogue metric it cannot compute is listed by ``unavailable`` with the reason.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Profile(Protocol):
    name: str

    def models_info(self) -> dict[str, dict]:
        """Per model: {"source", "sha256", "version"} (the report's ``models``)."""

    def signature_parts(self) -> list[str]:
        """Every model setting that changes a number, for the report's signature and the feature cache key."""

    def unavailable(self) -> dict[str, str]:
        """Catalogue metric -> why this profile reports it as null."""

    def utterance_features(self, waves: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Features of each wave, batched over all of them."""

    def ser_input(self, feats: dict) -> np.ndarray:
        """The SER head's input vector from one utterance's features."""

    def pair_scores(self, src: dict, tgt: dict) -> tuple[dict[str, float | None], list[str]]:
        """The profile's pair metrics for one pair, and warnings."""
