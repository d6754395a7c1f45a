"""Evaluation with one SER head per side (source utterances through one head, target utterances through
another), as the paper's per-language heads need; the report records both heads."""

from __future__ import annotations

from models.registry import ProfileSpec
from models.ser.head import SerHead
from worker.engine.pipeline import Evaluator
from worker.engine.report import head_info


class PerSideError(ValueError):
    """The two heads or the pairs cannot be read one head per side."""


class PerSideEvaluator(Evaluator):
    """An Evaluator whose source utterances go through one SER head and target utterances through another."""

    def __init__(self, spec: ProfileSpec, source_head: SerHead, target_head: SerHead, **kwargs):
        if list(source_head.classes) != list(target_head.classes):
            raise PerSideError(
                f"the source head's classes {source_head.classes} differ from the target head's {target_head.classes}"
            )
        super().__init__(spec, source_head, **kwargs)
        self.target_head = target_head
        self._target_paths: set[str] = set()

    def evaluate_pairs(self, pairs, resolve, progress=None, utterances=None):
        sources = {resolve(p.source) for p in pairs}
        targets = {resolve(p.target) for p in pairs}
        shared = sources & targets
        if shared:
            raise PerSideError(
                f"{len(shared)} file(s) are both a source and a target (e.g. {sorted(shared)[0]}); "
                "per-language heads need distinct files per side"
            )
        self._target_paths = targets
        return super().evaluate_pairs(pairs, resolve, progress, utterances)

    def predict(self, utterances):
        """Source files through the source head, target files through the target head (each as Evaluator.predict:
        probabilities, and why the files that could not be read failed)."""
        probabilities, errors = {}, {}
        for head, is_target in ((self.head, False), (self.target_head, True)):
            side = {k: u for k, u in utterances.items() if (k in self._target_paths) == is_target}
            read, failed = self.predict_with(head, side)
            probabilities.update(read)
            errors.update(failed)
        return probabilities, errors


def mark_per_side_heads(report: dict, source_head: SerHead, target_head: SerHead) -> dict:
    """Record both heads in the report: models.ser.head (source) + ser_head_target; ser:<src>+<tgt> in the signature."""
    report["models"]["ser_head"] = {**head_info(source_head), "side": "source"}
    report["models"]["ser_head_target"] = {**head_info(target_head), "side": "target"}
    source_tag = f"ser:{source_head.sha256()[:12]}"
    report["signature"] = report["signature"].replace(source_tag, f"{source_tag}+{target_head.sha256()[:12]}", 1)
    return report
