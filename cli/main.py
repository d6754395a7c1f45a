"""`emopres` command line: each command group lives in its own module with a `register(subparsers)`."""
from __future__ import annotations

import argparse
import sys

from cli import datasets, evaluate, models, service, submit, train
from cli.errors import CommandError
from core import __version__

__all__ = ["CommandError", "build_parser", "main"]

COMMAND_GROUPS = (
    evaluate,   # evaluate, validate
    train,      # train-ser
    models,     # models check
    service,    # serve, worker, db, tokens
    submit,     # submit
    datasets,   # datasets meld-st, reproduce meld-st
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emopres", description="Emotion preservation evaluation for expressive S2ST.")
    parser.add_argument("--version", action="version", version=f"emopres {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(subparsers)
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
