"""Profiles by name, and the default SER head of each."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROFILES = ("lite", "paper")


class ProfileError(ValueError):
    """Unknown profile, or a profile whose models are not available here."""


@dataclass(frozen=True)
class ProfileSpec:
    """What a worker process needs to build its own profile instance (picklable)."""

    name: str = "lite"
    model_dir: str | None = None
    device: str = "cpu"
    fast: bool = False


def model_dir_from_env(model_dir: str | None = None) -> str | None:
    return model_dir or os.environ.get("EMOPRES_MODEL_DIR") or None


def create_profile(spec: ProfileSpec):
    if spec.name == "lite":
        from models.lite import LiteProfile

        return LiteProfile()
    if spec.name == "paper":
        model_dir = model_dir_from_env(spec.model_dir)
        if not model_dir:
            raise ProfileError("the paper profile needs a model directory: set EMOPRES_MODEL_DIR or pass --model-dir "
                               "(see `emopres models check`)")
        from models.paper import PaperProfile

        return PaperProfile.from_model_dir(model_dir, device=spec.device, fast=spec.fast)
    raise ProfileError(f"unknown profile {spec.name!r} (choose from {', '.join(PROFILES)})")


def default_head_path(spec: ProfileSpec) -> Path:
    from models.ser_head import SHIPPED_LITE_HEAD

    if spec.name == "lite":
        return SHIPPED_LITE_HEAD
    model_dir = model_dir_from_env(spec.model_dir)
    return Path(model_dir or ".") / "ser_head"


def load_head(spec: ProfileSpec, head_path=None):
    """The SER head for a profile (models.ser_head.SerHead); imported lazily: torch is slow to import."""
    from models.ser_head import HeadError, SerHead

    path = Path(head_path) if head_path else default_head_path(spec)
    try:
        head = SerHead.load(path)
    except HeadError as error:
        hint = "" if head_path else " (no default head: train one with `emopres train-ser` and pass --head)"
        raise HeadError(f"{error}{hint}") from None
    expected = "egemaps" if spec.name == "lite" else "emotion2vec"
    if not head.feature_set.startswith(expected):
        raise HeadError(f"head {path} was trained on {head.feature_set} features; the {spec.name} profile needs {expected}")
    return head
