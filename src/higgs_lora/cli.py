"""`higgs-lora`: the command line. The parser is assembled from the command modules (commands/);
every error higgs-lora raises on purpose becomes one line on stderr and a non-zero exit."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import warnings

from higgs_lora import __version__, commands
from higgs_lora.hardware import machine
from higgs_lora.errors import HiggsLoraError, Interrupted

EPILOG = "Run 'higgs-lora COMMAND --help' for a command's options. Docs: README.md"
DISTRIBUTED_COMMANDS = ("run", "train", "finetune")


class Parser(argparse.ArgumentParser):
    """No abbreviated options: argparse's prefix matching took `--weight 1.0` for `--weight-decay 1.0`
    before --weight existed; a mistyped or unknown flag must be an error, never another flag."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The parser, and the function of each command by name."""
    parser = Parser(
        prog="higgs-lora", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train residual MLPs on large tabular physics data (HIGGS format) and adapt them with\n"
                    "low-rank adapters (LoRA): the notebook's whole workflow, fast, reproducible.")
    parser.add_argument("--version", action="version", version=f"higgs-lora {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the Python traceback instead of one line (also HIGGS_LORA_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    functions = {}
    for add_parsers in commands.PARSERS:
        functions.update(add_parsers(sub))
    return parser, functions


def main(argv: list[str] | None = None) -> int:
    # Threads from the cores this process may use, idle OpenMP threads asleep: set before anything imports
    # PyTorch, as OpenMP reads them once (never over the user's own OMP_* settings).
    machine.configure_threads()
    argv = sys.argv[1:] if argv is None else argv
    parser, functions = build_parser()
    args = parser.parse_args(argv)
    from higgs_lora.hardware import distributed
    with warnings.catch_warnings():
        warnings.showwarning = _warning_line  # a warning (e.g. tracking failed) is one line, like an error
        code = _main(functions[args.command], args, argv, distributed)
    distributed.finish(code)  # under torchrun: a clean, trustworthy exit (see distributed.finish)
    return code


def _main(function, args, argv, distributed) -> int:
    # --debug / HIGGS_LORA_DEBUG=1: an error propagates, and Python prints its traceback.
    debug = args.debug or os.environ.get("HIGGS_LORA_DEBUG", "") not in ("", "0")
    try:
        return _run(function, args, argv, distributed)
    except Interrupted as e:
        print(f"higgs-lora: interrupted: {e}\n  resume with: higgs-lora {shlex.join(_with_resume(argv))}",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("higgs-lora: aborted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        print(f"higgs-lora: {_one_line(e)}", file=sys.stderr)
        return 1


def _one_line(e: Exception) -> str:
    """What the user reads of an error: the file it concerns, what went wrong; never a traceback."""
    if isinstance(e, HiggsLoraError):
        return f"error: {e}"
    if isinstance(e, MemoryError):
        return "error: out of memory (try fewer rows, --device cuda, or a machine with more memory)"
    if isinstance(e, OSError):  # disk full, permission denied, ...: name the file
        return f"error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}"
    first = str(e).splitlines()[0] if str(e) else ""
    return (f"internal error: {type(e).__name__}: {first} (run again with --debug for the traceback, "
            "and please report it)")


def _run(function, args, argv, distributed) -> int:
    if distributed.started_by_torchrun():
        if args.command not in DISTRIBUTED_COMMANDS:
            raise HiggsLoraError(f"'{args.command}' runs in one process; only run, train and finetune use torchrun")
        distributed.setup()
    function(args, argv)
    return 0


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"higgs-lora: warning: {message}", file=sys.stderr if file is None else file)


def _with_resume(argv: list[str]) -> list[str]:
    argv = [a for a in argv if a != "--force"]
    return argv if "--resume" in argv else argv + ["--resume"]
