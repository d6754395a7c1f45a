"""`emopres` command line: each command group lives in its own module with a `register(subparsers)`."""
from __future__ import annotations

import argparse
import importlib
import sys

from app import __version__

COMMAND_MODULES = (
    "app.cli_evaluate",   # evaluate, validate
    "app.cli_train",      # train-ser
    "app.cli_models",     # models check
    "app.cli_service",    # serve, worker, db, tokens
    "app.cli_client",     # submit
    "app.cli_datasets",   # datasets meld-st, reproduce meld-st
)


class CommandError(Exception):
    """A user error: printed as one clear line, exit status 2."""


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
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CommandError as error:
        print(f"emopres {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
