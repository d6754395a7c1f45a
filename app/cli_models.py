"""`emopres models check`: which paper-profile models are present, where, and what is missing."""
from __future__ import annotations

import json

from app.cli_errors import CommandError
from models.registry import model_dir_from_env


def register(subparsers) -> None:
    models = subparsers.add_parser("models", help="inspect the local model directory (paper profile)")
    actions = models.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="list each paper-profile model: present or missing, path, sha256")
    check.add_argument("--model-dir", help="default: $EMOPRES_MODEL_DIR")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.set_defaults(handler=run_check)


def run_check(args) -> int:
    from models.paper import check_models

    model_dir = model_dir_from_env(args.model_dir)
    if not model_dir:
        raise CommandError("no model directory: set EMOPRES_MODEL_DIR or pass --model-dir "
                           "(docs/paper-models.md says what to put there)")
    entries = check_models(model_dir)
    if args.json:
        print(json.dumps(entries, indent=1))
    else:
        for entry in entries:
            status = "present" if entry.get("present") else "MISSING"
            print(f"{entry['name']:<28}{status:<9}{entry.get('path', '')}")
            for key in ("sha256", "parameters", "hint"):
                if entry.get(key) is not None:
                    print(f"{'':<28}{key}: {entry[key]}")
    return 0 if all(entry.get("present") for entry in entries) else 1
