"""`emopres submit` and `emopres jobs ...`: evaluate on an emopres service, gate CI on the result, look jobs up.

The light distribution (`pip install ./client`: httpx only) makes these the whole `emopres` command;
the full package registers the same commands beside evaluate, serve and the rest.

Exit status of submit: 0 every gate passed; 1 a gate failed (each failing gate is named); 2 the run
could not be judged (bad arguments, service unreachable or refusing the upload, job failed, timeout,
and, with --baseline-missing fail, a --baseline-name that matches no succeeded job).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from emopres_client import __version__

EXIT_OK, EXIT_GATE_FAILED, EXIT_ERROR = 0, 1, 2
HEADLINE_FALLBACK = ("bar", "epr", "kappa")  # a job view without headline metrics (an old service)


class CommandError(Exception):
    """A user error: printed as one clear line, exit status 2."""


# ---------------------------------------------------------------- arguments


def _service_arguments(parser) -> None:
    parser.add_argument(
        "--server", default=os.environ.get("EMOPRES_SERVER"), help="service URL (default: $EMOPRES_SERVER)"
    )
    parser.add_argument(
        "--token", default=None, help="API token (default: $EMOPRES_TOKEN; prefer the variable in CI, argv is visible)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=4,
        help="retries of a request on connection errors and 429/502/503/504 (default 4, backing off)",
    )


def register(subparsers) -> None:
    submit = subparsers.add_parser(
        "submit",
        help="evaluate a pairs file on an emopres service; exit 1 when a --gate fails",
        description="Upload a pairs file and its audio to an emopres service, wait for the report, print a "
        "summary and check gates. Exit 0: all gates pass; 1: a gate failed; 2: error.",
    )
    submit.add_argument("pairs", help="CSV or JSONL with pair_id, source, target[, label][, group]")
    _service_arguments(submit)
    submit.add_argument(
        "--audio-root", help="folder the pairs' paths are relative to (default: the pairs file's folder)"
    )
    submit.add_argument("--name", help="job name, e.g. system@commit (dashboards list jobs by name)")
    submit.add_argument("--profile", help="evaluation profile (default: the service's)")
    submit.add_argument("--metadata", help='JSON object stored with the job, e.g. \'{"commit": "abc123"}\'')
    submit.add_argument(
        "--group-column",
        help="column with speaker/dialogue ids: CIs resample groups (default: a 'group', else a 'speaker' column; "
        "'none': resample pairs)",
    )
    submit.add_argument(
        "--callback-url",
        metavar="URL",
        help="the service POSTs the signed job summary here when the job finishes (webhook; the "
        "host must be on the service's allow-list)",
    )
    baseline = submit.add_mutually_exclusive_group()
    baseline.add_argument(
        "--baseline", metavar="JOB_ID", help="compare with this job (paired bootstrap over shared pair ids)"
    )
    baseline.add_argument(
        "--baseline-name", metavar="NAME", help="compare with the newest succeeded job of this name (e.g. system@main)"
    )
    submit.add_argument(
        "--baseline-missing",
        choices=("fail", "skip"),
        default="fail",
        help="when --baseline-name matches no succeeded job (the first pull request): fail (exit 2, "
        "the default) or skip the comparison and its --max-drop gates (other gates still count)",
    )
    submit.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="EXPR",
        help='e.g. "bar>=0.5", "epr.ci_low>=0.25" (repeatable; a null metric fails its gate)',
    )
    submit.add_argument(
        "--max-drop",
        action="append",
        default=[],
        metavar="METRIC=AMOUNT",
        help="with --baseline: fail when METRIC falls more than AMOUNT below the baseline "
        "(METRIC=AMOUNT:sig: only when the drop is significant, p < 0.05); repeatable",
    )
    submit.add_argument("--out", help="write the report JSON here")
    submit.add_argument("--comparison-out", help="write the comparison JSON here (with --baseline)")
    submit.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the job (default 3600)")
    submit.add_argument("--poll", type=float, default=5.0, help="seconds between status checks (default 5)")
    submit.add_argument("--idempotency-key", help="reuse a key to make a retried CI step return the same job")
    submit.add_argument(
        "--progress-interval",
        type=float,
        default=5.0,
        metavar="S",
        help="without a terminal (CI logs): one progress line every S seconds (default 5)",
    )
    submit.add_argument("--quiet", action="store_true", help="no progress output")
    submit.set_defaults(handler=run_submit)

    jobs = subparsers.add_parser(
        "jobs",
        help="list and look up jobs on an emopres service",
        description="Jobs of your token's project on an emopres service.",
    )
    commands = jobs.add_subparsers(dest="jobs_command", required=True)
    listing = commands.add_parser("list", help="jobs, newest first (a table; --json for the API's items)")
    _service_arguments(listing)
    listing.add_argument("--name", help="exact name")
    listing.add_argument("--name-prefix", help="names starting with this, e.g. my-s2st@ (a system's versions)")
    listing.add_argument("--status", choices=("queued", "running", "succeeded", "failed"))
    listing.add_argument("--oldest-first", action="store_true", help="oldest first (to plot a metric over versions)")
    listing.add_argument("--limit", type=int, default=20, help="at most this many (default 20, up to 200)")
    listing.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME",
        help="headline metric columns (default: bar, epr, kappa); repeatable",
    )
    listing.add_argument("--json", action="store_true", help="print the API's items as JSON")
    listing.set_defaults(handler=run_jobs_list)
    for name, help_text, handler in (
        ("show", "one job: status, progress, headline metrics, links", run_jobs_show),
        ("report", "the job's report JSON", run_jobs_report),
        ("deliveries", "the job's webhook deliveries", run_jobs_deliveries),
        ("share", "a link to the job's report page that opens with no token, until it expires", run_jobs_share),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("job_id")
        _service_arguments(command)
        if name == "report":
            command.add_argument("--out", help="write it here instead of stdout")
        command.set_defaults(handler=handler)


def _client(args):
    from emopres_client.client import Client

    if not args.server:
        raise CommandError("no server: pass --server URL or set EMOPRES_SERVER")
    token = args.token or os.environ.get("EMOPRES_TOKEN") or None
    return Client(args.server, token, retries=max(0, args.retries))


def _parse_submit(args, metrics: tuple[str, ...]):
    from emopres_client.gates import parse_gate, parse_max_drop

    metadata = None
    if args.metadata:
        try:
            metadata = json.loads(args.metadata)
        except json.JSONDecodeError as error:
            raise CommandError(f"--metadata is not valid JSON: {error.msg}") from None
        if not isinstance(metadata, dict):
            raise CommandError("--metadata must be a JSON object")
    try:
        gates = [parse_gate(g, metrics or None) for g in args.gate]
        drops = [parse_max_drop(d, metrics or None) for d in args.max_drop]
    except ValueError as error:
        raise CommandError(str(error)) from None
    if drops and not (args.baseline or args.baseline_name):
        raise CommandError("--max-drop needs --baseline JOB_ID or --baseline-name NAME")
    return metadata, gates, drops


# ---------------------------------------------------------------- output


def format_gate_table(results) -> str:
    if not results:
        return ""
    width = max(len(r.gate) for r in results)
    lines = ["gates:"]
    for r in results:
        state = "SKIP" if r.observed == "skipped" else "PASS" if r.passed else "FAIL"
        lines.append(
            f"  {state}  {r.gate:<{width}}  {r.observed}"
            + (f"  ({r.reason})" if r.reason and (not r.passed or state == "SKIP") else "")
        )
        if r.warning:
            lines.append(f"  WARN  {r.gate:<{width}}  {r.warning}")
    return "\n".join(lines)


def _number(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def aligned(rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Rows of cells as lines whose columns line up whatever their widths; the last cell is never padded."""
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(max(map(len, rows)))]
    return [
        indent + "  ".join(cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]


def format_comparison(comparison: dict, metrics) -> str:
    entries = comparison.get("metrics") or {}
    lines = [
        f"compared with baseline {comparison.get('baseline_id')}: {comparison.get('n_shared')} shared pairs "
        "(diff = job - baseline, paired bootstrap)"
    ]
    rows = [["metric", "baseline", "job", "diff", "95% CI", "p", "note"]]
    for name in metrics:
        entry = entries.get(name)
        if not isinstance(entry, dict):
            continue
        low, high = entry.get("ci_low"), entry.get("ci_high")
        rows.append(
            [
                name,
                _number(entry.get("baseline"), ".3f"),
                _number(entry.get("job"), ".3f"),
                "null" if entry.get("diff") is None else f"{entry['diff']:+.3f}",
                f"[{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else "-",
                _number(entry.get("p_value"), ".3g"),
                str(entry.get("reason") or ""),
            ]
        )
    if len(rows) > 1:
        lines += aligned(rows)
    flipped = (comparison.get("flipped") or {}).get("agree_to_disagree") or []
    lines.append(f"  {len(flipped)} pair(s) flipped from agree to disagree")
    for warning in comparison.get("warnings") or []:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


# ---------------------------------------------------------------- submit


def _baseline(client, args) -> str | None:
    """The baseline job's id; None when --baseline-name matches nothing and --baseline-missing skip."""
    from emopres_client.client import ClientError

    if not args.baseline_name:
        return args.baseline
    try:
        found = client.latest_job(args.baseline_name)
    except ClientError as error:
        if error.code != "no_baseline":
            raise
        if args.baseline_missing == "fail":
            raise CommandError(
                f"{error} (the first run of a branch has none: --baseline-missing skip "
                "compares nothing and skips the --max-drop gates)"
            ) from None
        print(
            f"baseline: no succeeded job named {args.baseline_name!r} yet: comparison and --max-drop gates "
            "skipped (--baseline-missing skip)",
            file=sys.stderr,
        )
        return None
    print(f"baseline: job {found['id']} ({args.baseline_name})", file=sys.stderr)
    return found["id"]


def run_submit(args) -> int:
    from emopres_client.client import ClientError
    from emopres_client.gates import GateResult, check_gates, check_max_drops
    from emopres_client.pairs import ManifestError
    from emopres_client.progress import Progress
    from emopres_client.summary import format_summary

    try:
        with _client(args) as client:
            metadata, gates, drops = _parse_submit(args, client.metric_names())
            baseline_id = _baseline(client, args)  # resolved first: a missing baseline fails before the upload
            upload = Progress("uploading", "B", interval=args.progress_interval, enabled=not args.quiet)
            try:
                created = client.submit(
                    args.pairs,
                    audio_root=args.audio_root,
                    name=args.name,
                    profile=args.profile,
                    metadata=metadata,
                    group_column=args.group_column,
                    idempotency_key=args.idempotency_key,
                    callback_url=args.callback_url,
                    on_upload=lambda sent, total: upload.update(sent, total),
                )
            finally:
                upload.close()
            job_id = created["id"]
            print(f"job {job_id} {created.get('status')}: {args.server.rstrip('/')}/v1/jobs/{job_id}", file=sys.stderr)
            bar = Progress("evaluating", "pair", interval=args.progress_interval, enabled=not args.quiet)

            def on_progress(view: dict) -> None:
                progress = view.get("progress") or {}
                bar.update(progress.get("done") or 0, progress.get("total") or 0, view.get("status", ""))

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

    headline = list(view.get("headline") or HEADLINE_FALLBACK)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    if args.comparison_out and comparison is not None:
        Path(args.comparison_out).write_text(json.dumps(comparison, indent=1))
    print(f"job: {job_id}" + (f"  name: {args.name}" if args.name else ""))
    print(format_summary(report, headline))
    if comparison is not None:
        print()
        print(format_comparison(comparison, headline))
    if comparison is None and baseline_id is None and args.baseline_name:
        results = check_gates(report, gates) + [
            GateResult(str(d), True, "skipped", f"no baseline named {args.baseline_name!r} yet") for d in drops
        ]
    else:
        results = check_gates(report, gates) + check_max_drops(comparison, drops)
    if results:
        print()
        print(format_gate_table(results))
    failed = [r for r in results if not r.passed]
    if failed:
        print(
            f"emopres submit: {len(failed)} gate(s) failed: " + "; ".join(f"{r.gate}: {r.reason}" for r in failed),
            file=sys.stderr,
        )
        return EXIT_GATE_FAILED
    return EXIT_OK


# ---------------------------------------------------------------- jobs


def _cell(entry) -> str:
    value = (entry or {}).get("value") if isinstance(entry, dict) else None
    return "null" if value is None else f"{value:.3f}"


def run_jobs_list(args) -> int:
    from emopres_client.client import ClientError

    try:
        with _client(args) as client:
            page = client.list_jobs(
                name=args.name,
                name_prefix=args.name_prefix,
                status=args.status,
                order="created_at" if args.oldest_first else None,
                limit=args.limit,
            )
    except ClientError as error:
        raise CommandError(str(error)) from None
    items = page["items"]
    if args.json:
        print(json.dumps(items, indent=1))
        return EXIT_OK
    metrics = args.metric or list(HEADLINE_FALLBACK)
    print("\t".join(["id", "name", "status", "created_at", *metrics]))
    for job in items:
        headline = job.get("headline") or {}
        print(
            "\t".join(
                [
                    job["id"],
                    job.get("name") or "",
                    job["status"],
                    job.get("created_at") or "",
                    *(_cell(headline.get(m)) for m in metrics),
                ]
            )
        )
    return EXIT_OK


def _print_json(args, fetch) -> int:
    from emopres_client.client import ClientError

    try:
        with _client(args) as client:
            value = fetch(client)
    except ClientError as error:
        raise CommandError(str(error)) from None
    text = json.dumps(value, indent=1)
    if getattr(args, "out", None):
        Path(args.out).write_text(text)
    else:
        print(text)
    return EXIT_OK


def run_jobs_show(args) -> int:
    return _print_json(args, lambda client: client.job(args.job_id))


def run_jobs_report(args) -> int:
    return _print_json(args, lambda client: client.report(args.job_id))


def run_jobs_deliveries(args) -> int:
    return _print_json(args, lambda client: client.deliveries(args.job_id))


def run_jobs_share(args) -> int:
    return _print_json(args, lambda client: client.share(args.job_id))


# ---------------------------------------------------------------- the light distribution's `emopres`


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse, run the command's handler, and turn a CommandError into one line and exit status 2."""
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CommandError as error:
        print(f"emopres {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emopres",
        description="emopres client: evaluate on an emopres service and gate CI on emotion preservation.",
    )
    parser.add_argument("--version", action="version", version=f"emopres-client {__version__}")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
