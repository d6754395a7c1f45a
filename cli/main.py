"""`emopres` command line: each command group lives in its own module with a `register(subparsers)`."""

from __future__ import annotations

import argparse
import sys

from cli import datasets, evaluate, models, service, train
from core import __version__
from emopres_client import cli as client_commands
from emopres_client.cli import CommandError, run  # one error type (exit 2) for every command

__all__ = ["CommandError", "build_parser", "main"]

COMMAND_GROUPS = (
    evaluate,  # evaluate, validate
    train,  # train-ser
    models,  # models fetch, lock, check, verify
    service,  # serve, worker, db, tokens
    client_commands,  # submit, jobs (the light client's commands)
    datasets,  # datasets meld-st, reproduce meld-st
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emopres", description="Emotion preservation evaluation for expressive S2ST.")
    parser.add_argument("--version", action="version", version=f"emopres {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
