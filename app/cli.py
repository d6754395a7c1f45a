"""`emopres` command line: each command group lives in its own module with a `register(subparsers)`."""
from __future__ import annotations

import argparse
import importlib
import sys

from app import __version__
from emopres_client.cli import CommandError, run  # one error type (exit 2) for every command

__all__ = ["CommandError", "build_parser", "main"]

COMMAND_MODULES = (
    "app.cli_evaluate",   # evaluate, validate
    "app.cli_train",      # train-ser
    "app.cli_models",     # models check
    "app.cli_service",    # serve, worker, db, tokens
    "emopres_client.cli",  # submit, jobs
    "app.cli_datasets",   # datasets meld-st, reproduce meld-st
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emopres", description="Emotion preservation evaluation for expressive S2ST.")
    parser.add_argument("--version", action="version", version=f"emopres {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:  # command group not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
