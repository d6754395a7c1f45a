"""`emopres models check | fetch | lock | verify`: the paper-profile model folder: what is there, downloading it
(on a machine with internet, never at run time), the lock file that says which weights exactly, and each
model's outputs checked against its reference implementation."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from emopres_client.cli import CommandError
from models.registry import model_dir_from_env


def register(subparsers) -> None:
    models = subparsers.add_parser("models", help="inspect the local model directory (paper profile)")
    actions = models.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="list each paper-profile model: present or missing, path, sha256")
    check.add_argument("--model-dir", help="default: $EMOPRES_MODEL_DIR")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.add_argument(
        "--fast",
        action="store_true",
        help="also load the present models in fast mode and print what it chose on this machine "
        "(each model timed in fp32 and bf16; the faster is kept, as a worker does at start)",
    )
    check.add_argument("--device", default="cpu", help="device for --fast (default: %(default)s)")
    check.set_defaults(handler=run_check)

    fetch = actions.add_parser(
        "fetch",
        help="download paper-profile models (huggingface_hub, or the ModelScope "
        "mirror) into the model folder and lock them; resumable",
    )
    fetch.add_argument("names", nargs="*", metavar="NAME", help="models to fetch (default: all on a hub)")
    fetch.add_argument("--model-dir", help="default: $EMOPRES_MODEL_DIR")
    fetch.add_argument(
        "--source",
        choices=("huggingface", "modelscope"),
        default="huggingface",
        help="the hub to download from (no silent fallback: the lock records which; default: %(default)s)",
    )
    fetch.add_argument("--revision", help="branch, tag or commit (one model only; default: the hub's default branch)")
    fetch.add_argument("--endpoint", help="hub address (default: $HF_ENDPOINT / the client's own)")
    fetch.set_defaults(handler=run_fetch)

    verify = actions.add_parser(
        "verify",
        help="run each present model through emopres and through its reference "
        "implementation on a few utterances; exit 1 if any differs beyond "
        "its tolerance",
    )
    verify.add_argument("--model-dir", help="default: $EMOPRES_MODEL_DIR")
    verify.add_argument(
        "--audio",
        action="append",
        metavar="FILE",
        help="an audio file to compare on (repeatable; default: synthetic speech-like signals of "
        "0.3-2 s); the first 30 s of each are used",
    )
    verify.add_argument("--device", default="cpu", help="device for emopres' path (default: %(default)s)")
    verify.add_argument("--json", action="store_true", help="print JSON instead of a table")
    verify.set_defaults(handler=run_verify)

    lock = actions.add_parser("lock", help="write the lock file (every file's sha256) for a folder filled by hand")
    lock.add_argument("model_dir", metavar="DIR")
    lock.add_argument("names", nargs="*", metavar="NAME", help="models to lock (default: every one present)")
    lock.set_defaults(handler=run_lock)


def run_check(args) -> int:
    from models.paper.inventory import check_models

    model_dir = model_dir_from_env(args.model_dir)
    if not model_dir:
        raise CommandError(
            "no model directory: set EMOPRES_MODEL_DIR or pass --model-dir "
            "(docs/paper-models.md says what to put there)"
        )
    from models.paper.inventory import lock_verified
    from models.runtime.weights_lock import LOCK_NAME

    entries = check_models(model_dir)
    if args.fast:
        _add_fast_choices(entries, model_dir, args.device)
    passed = all(entry.get("present") for entry in entries) and lock_verified(entries)
    head = _ser_head_entry(Path(model_dir))
    if args.json:
        print(json.dumps([*entries, head], indent=1))
    else:
        print(_bf16_line(args.device))
        for entry in entries:
            status = "present" if entry.get("present") else "MISSING"
            print(f"{entry['name']:<28}{status:<9}{entry.get('path', '')}")
            for key in ("sha256", "parameters", "licence"):
                if entry.get(key) is not None:
                    print(f"{'':<28}{key}: {entry[key]}")
            print(f"{'':<28}lock: {_lock_line(entry['lock'])}")
            if entry.get("fast_mode") is not None:
                print(f"{'':<28}fast mode: {entry['fast_mode']['text']}")
            if entry.get("hint") is not None:
                print(f"{'':<28}hint: {entry['hint']}")
        print(f"{'ser_head (optional)':<28}{head['status']:<9}{head['path']}")
        print(f"{'':<28}{head['used']}")
        if not any(entry["lock"]["status"] in ("matches", "differs") for entry in entries):
            print(f"no {LOCK_NAME}: `emopres models lock {model_dir}` records which weights these are")
    return 0 if passed else 1


def _ser_head_entry(model_dir: Path) -> dict:
    """The optional trained SER head of the paper profile, and what reads SER without it."""
    path = model_dir / "ser_head"
    present = (path / "head.json").is_file()
    used = (
        "SER is read by this head (a trained head wins over emotion2vec+'s own classifier)"
        if present
        else "absent: SER is read by emotion2vec+'s built-in classifier (its 9 classes mapped to MELD-ST's 7); "
        "train a head on your labelled speech with `emopres train-ser --features emotion2vec --out "
        f"{path}`"
    )
    return {
        "name": "ser_head",
        "optional": True,
        "present": present,
        "status": "present" if present else "absent",
        "path": str(path),
        "used": used,
    }


FAST_TAGS = {"emotion2vec_plus_large": "e2v", "valence_arousal": "va", "speaker_wavlm_ecapa": "spk", "xlsr_53": "xlsr"}


def _add_fast_choices(entries: list[dict], model_dir, device: str) -> None:
    """Each network's fast-mode choice (``fast_mode``: mode, reason, timings) from a real fast-mode load."""
    from models.paper.profile import PaperProfile

    if not any(e.get("present") for e in entries if e["name"] == "emotion2vec_plus_large"):
        return
    choices = PaperProfile.from_model_dir(model_dir, device=device, fast=True, allow_missing=True).fast_choices()
    for entry in entries:
        entry["fast_mode"] = choices.get(FAST_TAGS.get(entry["name"], ""))


def _bf16_line(device: str) -> str:
    from models.runtime.precision import cpu_bf16_flags, cpu_native_bf16

    if device.startswith("cuda"):
        return f"fast mode on {device}: each model is timed in fp32 and bf16 when it loads; the faster is kept"
    f = cpu_bf16_flags()
    native = cpu_native_bf16()
    return (
        f"bf16 on this CPU: AVX512-BF16 {'yes' if f['avx512_bf16'] else 'no'}, AMX {'yes' if f['amx_bf16'] else 'no'}, "
        f"oneDNN bf16 kernels {'yes' if f['onednn_bf16'] else 'no'}; "
        + (
            "fast mode keeps fp32 here without timing (bf16 would be emulated and slower)"
            if native is False
            else "fast mode times each model in both when it loads and keeps the faster (--fast here shows it)"
        )
    )


def _lock_line(lock: dict) -> str:
    text = lock["status"]
    source = lock.get("source") or {}
    if source:
        text += f" ({source.get('kind')}" + (f" {source['repo_id']}" if source.get("repo_id") else "")
        text += (f" @ {lock['revision']}" if lock.get("revision") else "") + ")"
    for key in ("changed", "missing", "extra"):
        if lock.get(key):
            text += f"; {key}: {', '.join(lock[key])}"
    if lock.get("error"):
        text += f": {lock['error']}"
    return text


VERIFY_MAX_SECONDS = 30.0


def run_verify(args) -> int:
    from core.audio import AudioError, load_audio_file
    from models.paper.verify import verify_models, verify_passed

    model_dir = model_dir_from_env(args.model_dir)
    if not model_dir:
        raise CommandError("no model directory: set EMOPRES_MODEL_DIR or pass --model-dir")
    if not Path(model_dir).is_dir():
        raise CommandError(f"model directory {model_dir} does not exist")
    waves = None
    if args.audio:
        try:
            waves = [load_audio_file(path, max_seconds=VERIFY_MAX_SECONDS)[0] for path in args.audio]
        except AudioError as error:
            raise CommandError(str(error)) from None
    rows = verify_models(
        model_dir,
        waves,
        device=args.device,
        log=None if args.json else lambda message: print(message, file=sys.stderr, flush=True),
    )
    passed = verify_passed(rows)
    if args.json:
        print(json.dumps({"passed": passed, "models": rows}, indent=1))
        return 0 if passed else 1
    for row in rows:
        if row["max_abs_diff"] is not None:
            within = "<=" if row["status"] == "passed" else ">"
            print(
                f"{row['name']:<28}{row['status'].upper():<8}max |ours - reference| {row['max_abs_diff']:.2e} "
                f"{within} tolerance {row['tolerance']:.0e}  ({row['reference']})"
            )
        else:
            label = "ERROR" if row["status"] == "error" else "not checked"
            print(f"{row['name']:<28}{label}: {row['reason']}")
    counts = {
        status: sum(r["status"] == status for r in rows) for status in ("passed", "failed", "error", "not checked")
    }
    print(
        f"{'all checked models agree with their references' if passed else 'FAILED'}: {counts['passed']} passed, "
        f"{counts['failed'] + counts['error']} failed, {counts['not checked']} not checked"
    )
    return 0 if passed else 1


def run_fetch(args) -> int:
    from cli.fetch import FetchError, fetch_models

    model_dir = model_dir_from_env(args.model_dir)
    if not model_dir:
        raise CommandError("no model directory: set EMOPRES_MODEL_DIR or pass --model-dir")
    endpoint = args.endpoint or (os.environ.get("HF_ENDPOINT") if args.source == "huggingface" else None)
    try:
        result = fetch_models(
            model_dir,
            args.names or None,
            source=args.source,
            revision=args.revision,
            endpoint=endpoint,
            log=lambda message: print(message, file=sys.stderr, flush=True),
        )
    except FetchError as error:
        raise CommandError(str(error)) from None
    for name, entry in result["fetched"].items():
        print(
            f"{name:<28}fetched  {entry['source']['kind']} {entry['source']['repo_id']} @ {entry['revision'] or 'n/a'}"
            f"  {len(entry['files'])} file(s)"
        )
    for message in result["by_hand"]:
        print(message)
    print(f"lock written: {Path(model_dir) / 'emopres-models.lock.json'}; `emopres models check` verifies it")
    return 0


def run_lock(args) -> int:
    from cli.fetch import FetchError, lock_folder
    from models.runtime.weights_lock import LOCK_NAME, LockError

    try:
        entries = lock_folder(args.model_dir, args.names or None)
    except (FetchError, LockError, OSError) as error:
        raise CommandError(str(error)) from None
    for name, entry in entries.items():
        print(f"{name:<28}{entry['source']['kind']:<12}{len(entry['files'])} file(s)  digest {entry['digest'][:12]}")
    print(f"wrote {Path(args.model_dir) / LOCK_NAME}")
    return 0
