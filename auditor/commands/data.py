"""`auditor data fetch bbq [--dest DIR]`: download the BBQ release into the user data directory."""
from __future__ import annotations

from pathlib import Path

from auditor.data.fetch import BBQ_BASE_URL, BBQ_COMMIT, BBQ_REPO, fetch_bbq, user_bbq_dir


def register(sub) -> None:
    p = sub.add_parser("data", help="get the data sets the auditor reads (BBQ)")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = data_sub.add_parser("fetch", help=f"download a data set (BBQ from {BBQ_REPO} at commit {BBQ_COMMIT[:7]})")
    fetch.add_argument("dataset", choices=("bbq",), help="the data set to download")
    fetch.add_argument("--dest", type=Path, default=None,
                       help=f"folder for the jsonl files (default: {user_bbq_dir()}, which runs find on their own)")
    fetch.add_argument("--url", default=BBQ_BASE_URL, help="base URL of the data/ folder (a mirror; default: GitHub)")
    fetch.set_defaults(func=run)


def run(args) -> int:
    result = fetch_bbq(args.dest, base_url=args.url)
    for f in result.files:
        check = ("sha256 verified (pinned)" if f.pinned else
                 f"sha256 {f.sha256} equal to the one recorded at the first fetch" if f.matched_record else
                 f"sha256 {f.sha256} recorded (no pinned digest; BBQ jsonl checked)")
        print(f"{f.name}: {f.size_bytes:,} bytes, {check}")
    print(f"BBQ ({BBQ_REPO}@{BBQ_COMMIT[:7]}) in {result.folder}")
    if args.dest is not None and Path(args.dest).resolve() != user_bbq_dir().resolve():
        print(f"use it with --bbq {result.folder} or AUDITOR_BBQ_DIR={result.folder}")
    return 0
