"""What the paper models' wrappers (Emotion2Vec, ValenceArousal, SpeakerEncoder, XlsrEncoder) share:
where and how they run (device, precision and fast mode's choice, batch size), where their weights
came from, ``info()``, and the batched run of their network over a list of utterances."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from models.runtime.batching import (
    as_float_waves,
    count_parameters,
    cpu_streams,
    default_batch_seconds,
    run_batched,
)
from models.runtime.precision import FastChoice, check_precision, measure_fast_mode
from models.runtime.speedups import drop_packed


class PaperBackend:
    """Base of a paper model wrapper. A subclass sets ``min_samples`` (and ``exact_batching`` where padding
    can change its output), and defines ``_run`` (a batch of utterances -> one result each), ``_version``
    and ``_networks`` (what ``info()`` reports)."""

    #: what a too-short utterance is told, after "utterance i has n samples; " ({} = min_samples)
    too_short = "the model needs >= {}"
    #: False: padding changes the output, so utterances run one at a time
    exact_batching = True
    min_samples: int

    def __init__(
        self,
        *,
        device="cpu",
        precision: str | None = "fp32",
        source="",
        sha256="",
        max_batch_seconds: float | None = None,
    ):
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self.fast_choice: FastChoice | None = None  # set by from_pretrained(fast=True): what was timed, what was chosen
        self.source = source
        self.sha256 = sha256
        self._batch_seconds = max_batch_seconds

    @property
    def max_batch_seconds(self) -> float:
        """Padded audio per forward: as given, else the default of the device and precision (on CPU
        fp32 each utterance alone, bf16 batched: models.runtime.batching)."""
        return self._batch_seconds or default_batch_seconds(self.device, self.precision)

    @max_batch_seconds.setter
    def max_batch_seconds(self, seconds: float | None) -> None:
        self._batch_seconds = seconds

    def _fast_mode(self, fast: bool, precision: str | None, run: Callable[[list[np.ndarray]], object]):
        """The end of ``from_pretrained``: fast mode (no precision forced) times ``run`` in fp32 and bf16 on
        this machine and keeps the faster. Returns the model."""
        if fast and precision is None:
            self.fast_choice = measure_fast_mode(self, run)
            # the probe packed weights for both precisions: keep the chosen one's only
            drop_packed(self._networks(), keep=torch.bfloat16 if self.precision == "bf16" else torch.float32)
        return self

    def _version(self) -> str:
        raise NotImplementedError

    def _networks(self) -> tuple[nn.Module, ...]:
        raise NotImplementedError

    def _run(self, waves: list[np.ndarray]) -> list:
        raise NotImplementedError

    def info(self) -> dict:
        return {
            "source": self.source,
            "sha256": self.sha256,
            "version": self._version(),
            "parameters": sum(count_parameters(net) for net in self._networks()),
            "precision": self.precision,
        }

    def _batched(self, waves: Sequence[np.ndarray]) -> list:
        """``_run`` over all utterances, in batches of at most ``max_batch_seconds`` of audio: one result each."""
        waves = as_float_waves(waves)
        for i, w in enumerate(waves):
            if w.size < self.min_samples:
                raise ValueError(f"utterance {i} has {w.size} samples; " + self.too_short.format(self.min_samples))
        if not waves:
            return []
        return run_batched(
            waves,
            [w.size for w in waves],
            self._run,
            self.max_batch_seconds,
            max_items=None if self.exact_batching else 1,
            streams=cpu_streams(self.device),
        )
