"""The registry of profiles: for each profile name (core.profiles), how to build it, the features its
SER head must be trained on and where its default head is. A new profile is a sub-package of models/ whose
profile.py implements models.profile.Profile, plus one entry here (and its place in tests/test_layout.py SUBLAYERS)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.profiles import NO_SIDE_HEAD, PROFILES
from models.profile import Profile

log = logging.getLogger("emopres.models")

__all__ = [
    "PROFILES",
    "REGISTRY",
    "ProfileEntry",
    "ProfileError",
    "ProfileSpec",
    "create_profile",
    "default_head_path",
    "load_head",
    "load_side_head",
    "model_dir_from_env",
]


class ProfileError(ValueError):
    """Unknown profile, or a profile whose models are not available here."""


@dataclass(frozen=True)
class ProfileSpec:
    """What a worker process needs to build its own profile instance (picklable)."""

    name: str = "lite"
    model_dir: str | None = None
    device: str = "cpu"
    fast: bool = False


@dataclass(frozen=True)
class ProfileEntry:
    create: Callable[[ProfileSpec], Profile]  # imports its models lazily: torch is slow to import
    head_features: str  # the feature set a SER head for this profile is trained on (prefix)
    default_head: Callable[[ProfileSpec], Path]
    default_side_head: Callable[[ProfileSpec], Path]  # the per-side head, used when that folder exists
    # the head read when the default head's folder does not exist (None: that is an error)
    builtin_head: Callable[[ProfileSpec], object] | None = None


def model_dir_from_env(model_dir: str | None = None) -> str | None:
    return model_dir or os.environ.get("EMOPRES_MODEL_DIR") or None


def _lite(spec: ProfileSpec) -> Profile:
    from models.lite.profile import LiteProfile

    return LiteProfile()


NO_MODEL_DIR = (
    "the paper profile needs a model directory: set EMOPRES_MODEL_DIR or pass --model-dir "
    "(docs/paper-models.md; `emopres models check`)"
)


def _paper_model_dir(spec: ProfileSpec) -> Path:
    model_dir = model_dir_from_env(spec.model_dir)
    if not model_dir:
        raise ProfileError(NO_MODEL_DIR)
    return Path(model_dir)


def _paper(spec: ProfileSpec) -> Profile:
    from models.paper.profile import PaperProfile

    # emotion2vec alone gives SER and emo-sim; every other model's metrics are null with the reason
    return PaperProfile.from_model_dir(_paper_model_dir(spec), device=spec.device, fast=spec.fast, allow_missing=True)


def _shipped_lite_head(spec: ProfileSpec) -> Path:
    from models.ser.head import SHIPPED_LITE_HEAD

    return SHIPPED_LITE_HEAD


def _shipped_lite_side_head(spec: ProfileSpec) -> Path:
    from models.ser.head import SHIPPED_LITE_SIDE_HEAD

    return SHIPPED_LITE_SIDE_HEAD


def _paper_head(spec: ProfileSpec) -> Path:
    return _paper_model_dir(spec) / "ser_head"


def _paper_side_head(spec: ProfileSpec) -> Path:
    return _paper_model_dir(spec) / "ser_head_side"


def _builtin_paper_head(spec: ProfileSpec):
    """emotion2vec+'s own classifier (models.ser.builtin), when the model folder has no trained head."""
    from models.paper.inventory import SLOT
    from models.ser.builtin import emotion2vec_head

    return emotion2vec_head(_paper_model_dir(spec) / SLOT["emotion2vec_plus_large"].entry)


REGISTRY: dict[str, ProfileEntry] = {
    "lite": ProfileEntry(_lite, "egemaps", _shipped_lite_head, _shipped_lite_side_head),
    "paper": ProfileEntry(_paper, "emotion2vec", _paper_head, _paper_side_head, _builtin_paper_head),
}
assert tuple(REGISTRY) == PROFILES, "models.registry.REGISTRY must register exactly core.profiles.PROFILES"


def _entry(name: str) -> ProfileEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ProfileError(f"unknown profile {name!r} (choose from {', '.join(PROFILES)})") from None


def create_profile(spec: ProfileSpec) -> Profile:
    return _entry(spec.name).create(spec)


def default_head_path(spec: ProfileSpec) -> Path:
    return _entry(spec.name).default_head(spec)


def load_head(spec: ProfileSpec, head_path=None):
    """The SER head for a profile (models.ser.head.SerHead); imported lazily: torch is slow to import."""
    from models.ser.head import HeadError, SerHead

    path = Path(head_path) if head_path else default_head_path(spec)
    builtin = _entry(spec.name).builtin_head
    if not head_path and builtin is not None and not path.exists():
        return builtin(spec)
    try:
        head = SerHead.load(path)
    except HeadError as error:
        hint = "" if head_path else " (no default head: train one with `emopres train-ser` and pass --head)"
        raise HeadError(f"{error}{hint}") from None
    _check_features(spec, head, path)
    return head


def load_side_head(spec: ProfileSpec, side_head_path=None, head=None):
    """The per-side SER head of the side-normalised reading: `side_head_path`, or the profile's default when that
    folder exists and reads the classes of `head` (a head of the user's own may have others); None for NO_SIDE_HEAD
    or a profile without one."""
    from models.ser.head import HeadError, SerHead

    if side_head_path == NO_SIDE_HEAD:
        return None
    path = Path(side_head_path) if side_head_path else _entry(spec.name).default_side_head(spec)
    if not side_head_path and not (path / "head.json").is_file():
        return None
    side_head = SerHead.load(path)
    if side_head.normalization != "per_side":
        raise HeadError(
            f"side head {path} was trained with {side_head.normalization} normalisation; it needs per_side "
            "(`emopres train-ser --normalization per_side`)"
        )
    _check_features(spec, side_head, path)
    if not side_head_path and head is not None and set(head.classes) != set(side_head.classes):
        log.warning(
            "the profile's side head %s reads other classes than the SER head: no side reading "
            "(pass a matching --side-head)",
            path,
        )
        return None
    return side_head


def _check_features(spec: ProfileSpec, head, path: Path) -> None:
    from models.ser.head import HeadError

    expected = _entry(spec.name).head_features
    if not head.feature_set.startswith(expected):
        raise HeadError(
            f"head {path} was trained on {head.feature_set} features; the {spec.name} profile needs {expected}"
        )
