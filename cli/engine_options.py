"""The engine options shared by every command that evaluates pairs offline (`evaluate`, `validate`,
`reproduce meld-st`): profile, models, device, bootstrap, worker processes, feature cache, audio cap.
Each option means the same in every command."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from core.audio import DEFAULT_MAX_SECONDS
from core.feature_cache import default_cache_dir
from core.profiles import DEFAULT_PROFILE, PROFILES


def cache_dir_from_args(args) -> Path | None:
    """The feature cache folder the options ask for; None with --no-cache."""
    return None if args.no_cache else Path(args.cache_dir or default_cache_dir())


def add_engine_arguments(
    parser: argparse.ArgumentParser, *, default_profile: str | None = None, profile_help: str | None = None
) -> None:
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=default_profile or os.environ.get("EMOPRES_PROFILE", DEFAULT_PROFILE),
        help=profile_help,
    )
    parser.add_argument("--model-dir", help="paper-profile model folder (default: $EMOPRES_MODEL_DIR)")
    parser.add_argument("--device", default="cpu", help="paper profile: torch device (cpu, cuda, cuda:1)")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="paper profile: bf16 autocast where it measures faster than fp32 at load (the choice is in the signature)",
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% CIs")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: one per core for lite)")
    parser.add_argument("--cache-dir", default=None, help="feature cache folder (default: ~/.cache/emopres/features)")
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="do not read or write the feature cache folder (a run that needs features twice keeps "
        "them in a temporary folder, removed at the end)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=DEFAULT_MAX_SECONDS,
        help="refuse audio files longer than this (default: %(default)s)",
    )
