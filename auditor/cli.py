"""The `auditor` command. Each subcommand lives in `auditor/commands/<name>.py` with a
`register(subparsers)` function; only this layer parses arguments.

Exit codes shared by every command: 2 bad input (one line `auditor: error: ...`),
130 interrupted by Ctrl-C (one line; a study run records state `interrupted`),
143 (128 + SIGTERM) stopped by SIGTERM, as a CI job's cancellation or `timeout` sends it: the same
clean stop as Ctrl-C, with its own line and code,
141 (128 + SIGPIPE, as a shell reports a process killed by a closed pipe) when
stdout was closed before the command finished writing, e.g. `auditor status RUN | head -1`;
nothing is printed then. Command-specific codes are listed in docs/study.md.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import signal
import sys
import threading

import auditor.commands as commands
from auditor.core.errors import AuditorError
from auditor.core.provenance import auditor_version

#: Environment that silences third-party progress bars (tqdm, huggingface_hub, transformers' "Loading
#: weights", "Writing model shards", the GGUF "Converting and de-quantizing" bar). The project's own
#: progress (auditor.core.progress, rich) is not tqdm and stays. Set before those libraries are imported;
#: subprocesses (measurement workers, Ray) inherit it. A variable the user set wins.
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "HF_HUB_OFFLINE": "1"}

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be: whatever cleans up after Ctrl-C (a study run records
    state `interrupted`) does so for a cancelled CI job too."""


def _on_sigterm(signum, frame):
    raise Terminated()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auditor", description="Compression-risk auditor for LLMs (BBQ bias under pruning and quantization).")
    parser.add_argument("--version", action="version", version=f"auditor {auditor_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"auditor.commands.{info.name}").register(sub)
    return parser


def quiet_third_party() -> None:
    """Keep third-party progress bars and advisory warnings off the user's terminal (and out of JSON output)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    # Libraries imported before this call read their switches already; turn their bars off directly.
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()


def main(argv: list[str] | None = None) -> int:
    # Signal handlers can only be set from the main thread (a test may call main from another); the caller's
    # handler comes back afterwards (tests call main in-process).
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _main(argv: list[str] | None) -> int:
    try:
        try:
            return _run_command(argv)
        finally:  # a closed pipe shows here (after argparse's --help too), not in the interpreter's exit
            sys.stdout.flush()
    except Terminated:
        print("auditor: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("auditor: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _run_command(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    quiet_third_party()
    try:
        return int(args.func(args) or 0)
    except AuditorError as exc:  # one line, whatever the message holds (a server's reason, a file's text)
        print("auditor: error: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        return exc.exit_code


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of what is still buffered stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured by a test)
        pass


if __name__ == "__main__":
    sys.exit(main())
