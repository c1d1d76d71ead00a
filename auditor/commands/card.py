"""`auditor card RUN VARIANT`: the audit section of a Hugging Face model card for one compressed variant.

Exit codes: 0 written (to --out, else printed); 2 bad input (no such run, no such variant in it, a
variant scored on several runtimes without --backend, an unwritable --out).
"""
from __future__ import annotations

from pathlib import Path

from auditor.core.errors import AuditorError
from auditor.core.files import write_text
from auditor.report.card import model_card
from auditor.view.run import RunView
from auditor.view.runs import resolve_run


def register(sub) -> None:
    p = sub.add_parser("card", help="the audit section of a Hugging Face model card (YAML model-index + Markdown) "
                                    "for one variant of RUN")
    p.add_argument("run", metavar="RUN", help="run directory, or a run name under --reports")
    p.add_argument("variant", metavar="VARIANT", help="the compressed variant's spec, e.g. gguf-q4_k_m")
    p.add_argument("--backend", default=None, help="its runtime, when it was scored on several")
    p.add_argument("--protocol", default=None, help="the scoring protocol to report (default: the run's first)")
    p.add_argument("--reports", default="reports", help="folder holding run directories (default: reports)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE", help="write the card here (default: print it)")
    p.set_defaults(func=run)


def run(args) -> int:
    view = RunView.load(resolve_run(args.run, Path(args.reports)), protocol=args.protocol)
    text = model_card(view, args.variant, args.backend)
    if args.out is None:
        print(text, end="")
        return 0
    try:
        write_text(args.out, text)
    except OSError as exc:
        raise AuditorError(f"{args.out}: cannot write the card ({exc.strerror or exc})") from None
    print(f"card: {args.out}")
    return 0
