"""`emopres submit`: evaluate a pairs file on an emopres service and gate CI on the result.

Exit status: 0 every gate passed; 1 a gate failed (each failing gate is named); 2 the run could
not be judged (bad arguments, service unreachable or refusing the upload, job failed, timeout).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from cli.errors import CommandError

EXIT_OK, EXIT_GATE_FAILED = 0, 1


def register(subparsers) -> None:
    submit = subparsers.add_parser(
        "submit", help="evaluate a pairs file on an emopres service; exit 1 when a --gate fails",
        description="Upload a pairs file and its audio to an emopres service, wait for the report, print a "
                    "summary and check gates. Exit 0: all gates pass; 1: a gate failed; 2: error.")
    submit.add_argument("pairs", help="CSV or JSONL with pair_id, source, target[, label][, group]")
    submit.add_argument("--server", default=os.environ.get("EMOPRES_SERVER"),
                        help="service URL (default: $EMOPRES_SERVER)")
    submit.add_argument("--token", default=None,
                        help="API token (default: $EMOPRES_TOKEN; prefer the variable in CI, argv is visible)")
    submit.add_argument("--audio-root", help="folder the pairs' paths are relative to (default: the pairs file's folder)")
    submit.add_argument("--name", help="job name, e.g. system@commit (dashboards list jobs by name)")
    submit.add_argument("--profile", help="evaluation profile (default: the service's)")
    submit.add_argument("--metadata", help="JSON object stored with the job, e.g. '{\"commit\": \"abc123\"}'")
    submit.add_argument("--group-column", help="column with speaker/dialogue ids: CIs resample groups")
    baseline = submit.add_mutually_exclusive_group()
    baseline.add_argument("--baseline", metavar="JOB_ID", help="compare with this job (paired bootstrap over shared pair ids)")
    baseline.add_argument("--baseline-name", metavar="NAME",
                          help="compare with the newest succeeded job of this name (e.g. system@main)")
    submit.add_argument("--gate", action="append", default=[], metavar="EXPR",
                        help='e.g. "bar>=0.5", "epr.ci_low>=0.25" (repeatable; a null metric fails its gate)')
    submit.add_argument("--max-drop", action="append", default=[], metavar="METRIC=AMOUNT",
                        help="with --baseline: fail when METRIC falls more than AMOUNT below the baseline "
                             "(METRIC=AMOUNT:sig: only when the drop is significant, p < 0.05); repeatable")
    submit.add_argument("--out", help="write the report JSON here")
    submit.add_argument("--comparison-out", help="write the comparison JSON here (with --baseline)")
    submit.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the job (default 3600)")
    submit.add_argument("--poll", type=float, default=5.0, help="seconds between status checks (default 5)")
    submit.add_argument("--retries", type=int, default=4,
                        help="retries of a request on connection errors and 429/502/503/504 (default 4, backing off)")
    submit.add_argument("--idempotency-key", help="reuse a key to make a retried CI step return the same job")
    submit.add_argument("--quiet", action="store_true", help="no progress bars")
    submit.set_defaults(handler=run_submit)


def _parse_args(args):
    from cli.client import parse_gate, parse_max_drop
    from core.catalogue import METRICS

    if not args.server:
        raise CommandError("no server: pass --server URL or set EMOPRES_SERVER")
    metadata = None
    if args.metadata:
        try:
            metadata = json.loads(args.metadata)
        except json.JSONDecodeError as error:
            raise CommandError(f"--metadata is not valid JSON: {error.msg}") from None
        if not isinstance(metadata, dict):
            raise CommandError("--metadata must be a JSON object")
    try:
        gates = [parse_gate(g, METRICS) for g in args.gate]
        drops = [parse_max_drop(d, METRICS) for d in args.max_drop]
    except ValueError as error:
        raise CommandError(str(error)) from None
    if drops and not (args.baseline or args.baseline_name):
        raise CommandError("--max-drop needs --baseline JOB_ID or --baseline-name NAME")
    return metadata, gates, drops


def _bar(total: int, description: str, unit: str, quiet: bool):
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=description, unit=unit, unit_scale=unit == "B", unit_divisor=1024,
                file=sys.stderr, disable=quiet, leave=True, mininterval=0.2 if tty else 15.0)


def format_gate_table(results) -> str:
    if not results:
        return ""
    width = max(len(r.gate) for r in results)
    lines = ["gates:"]
    for r in results:
        lines.append(f"  {'PASS' if r.passed else 'FAIL'}  {r.gate:<{width}}  {r.observed}"
                     + (f"  ({r.reason})" if r.reason and not r.passed else ""))
    return "\n".join(lines)


def format_comparison(comparison: dict) -> str:
    from core.catalogue import HEADLINE_METRICS

    metrics = comparison.get("metrics") or {}
    lines = [f"compared with baseline {comparison.get('baseline_id')}: {comparison.get('n_shared')} shared pairs "
             "(diff = job - baseline, paired bootstrap)"]
    for name in HEADLINE_METRICS:
        entry = metrics.get(name)
        if not isinstance(entry, dict):
            continue
        if entry.get("diff") is None:
            lines.append(f"  {name:<12}  null ({entry.get('reason')})")
            continue
        ci = (f"[{entry['ci_low']:+.3f}, {entry['ci_high']:+.3f}]" if entry.get("ci_low") is not None
              and entry.get("ci_high") is not None else "")
        p = f"p={entry['p_value']:.3g}" if entry.get("p_value") is not None else ""
        lines.append(f"  {name:<12}  {entry['diff']:+.3f}  {ci}  {p}".rstrip())
    flipped = (comparison.get("flipped") or {}).get("agree_to_disagree") or []
    lines.append(f"  {len(flipped)} pair(s) flipped from agree to disagree")
    for warning in comparison.get("warnings") or []:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


def run_submit(args) -> int:
    from cli.client import Client, ClientError, check_gates, check_max_drops
    from worker.pairs import ManifestError
    from worker.report import format_summary

    metadata, gates, drops = _parse_args(args)
    token = args.token or os.environ.get("EMOPRES_TOKEN") or None
    try:
        with Client(args.server, token, retries=max(0, args.retries)) as client:
            baseline_id = args.baseline
            if args.baseline_name:  # resolved first: a missing baseline fails before the upload
                baseline_id = client.latest_job(args.baseline_name)["id"]
                print(f"baseline: job {baseline_id} ({args.baseline_name})", file=sys.stderr)
            upload = _bar(0, "uploading", "B", args.quiet)

            def on_upload(sent: int, total: int) -> None:
                upload.total = total
                upload.n = sent
                upload.refresh()

            try:
                created = client.submit(args.pairs, audio_root=args.audio_root, name=args.name, profile=args.profile,
                                        metadata=metadata, group_column=args.group_column,
                                        idempotency_key=args.idempotency_key, on_upload=on_upload)
            finally:
                upload.close()
            job_id = created["id"]
            print(f"job {job_id} {created.get('status')}: {args.server.rstrip('/')}/v1/jobs/{job_id}", file=sys.stderr)
            bar = _bar(0, "evaluating", "pair", args.quiet)

            def on_progress(view: dict) -> None:
                progress = view.get("progress") or {}
                bar.total = progress.get("total") or bar.total
                bar.n = progress.get("done") or 0
                bar.set_postfix_str(view.get("status", ""), refresh=True)

            try:
                view = client.wait(job_id, poll=args.poll, timeout=args.timeout, on_progress=on_progress)
            finally:
                bar.close()
            if view.get("status") != "succeeded":
                errors = "; ".join(view.get("errors") or []) or view.get("error") or "no detail"
                raise CommandError(f"job {job_id} {view.get('status')}: {errors}")
            report = client.report(job_id)
            comparison = client.compare(job_id, baseline_id) if baseline_id else None
    except ClientError as error:
        raise CommandError(str(error)) from None
    except ManifestError as error:
        raise CommandError(f"{args.pairs}: {error}") from None

    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    if args.comparison_out and comparison is not None:
        Path(args.comparison_out).write_text(json.dumps(comparison, indent=1))
    print(f"job: {job_id}" + (f"  name: {args.name}" if args.name else ""))
    print(format_summary(report))
    if comparison is not None:
        print()
        print(format_comparison(comparison))
    results = check_gates(report, gates) + check_max_drops(comparison, drops)
    if results:
        print()
        print(format_gate_table(results))
    failed = [r for r in results if not r.passed]
    if failed:
        print(f"emopres submit: {len(failed)} gate(s) failed: " + "; ".join(f"{r.gate}: {r.reason}" for r in failed),
              file=sys.stderr)
        return EXIT_GATE_FAILED
    return EXIT_OK
