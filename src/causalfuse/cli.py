"""The ``causalfuse`` command line.

Each subcommand lives in its own module, which provides
``add_arguments(parser)`` and ``run(args) -> int``; only the module of the
subcommand being run is imported, so ``causalfuse --help`` stays quick.
Problems caused by the input are reported as one line naming the file and the
problem (exit status 2), never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from typing import Sequence

from .errors import CausalFuseError, CausalFuseWarning

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("causalfuse.demo", "fuse the built-in synthetic sample pair and write a side-by-side figure"),
    "fuse": ("causalfuse.fuse_cli", "fuse an infrared-visible pair, or two folders of pairs"),
    "register": ("causalfuse.register.cli", "register infrared images to visible ones from another camera (warp onto the visible grid)"),
    "export": ("causalfuse.export_cli", "write a network with its weights as an ONNX file"),
    "eval": ("causalfuse.metrics.cli", "score fused images with the field's metrics"),
    "dictionary": ("causalfuse.dictionary.cli", "build or inspect confounder dictionaries"),
    "train": ("causalfuse.train.cli", "train CausalFusionNet"),
    "bench": ("causalfuse.bench.cli", "benchmark methods x datasets x metrics, with tables, figures and a report"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="causalfuse",
        description="Causality-driven infrared-visible image fusion, metrics and benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"causalfuse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            importlib.import_module(module).add_arguments(p)
    return parser


def _one_line_warnings() -> None:
    """Show the package's own warnings as one line each (others as Python shows them)."""
    default = warnings.showwarning
    if getattr(default, "causalfuse_one_line", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - the warnings module's signature
        if issubclass(category, CausalFuseWarning):
            print(f"causalfuse: warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    show.causalfuse_one_line = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def _huge_pages(command: str | None) -> None:
    """For training, ask PyTorch for transparent huge pages for its large buffers, unless the user chose otherwise.

    A training step at 256 x 256 allocates gigabytes of fresh codes and
    gradients; written for the first time in 4 kB pages they take hundreds of
    thousands of page faults, in 2 MB pages a few hundred: a step 5-8 %
    faster (4.0 s against 4.3 s, side by side). The first step pays about 5 s
    once for the kernel to gather the huge pages, which is also why a
    one-pair ``fuse`` is not given them (0.6 s slower, measured). PyTorch
    reads THP_MEM_ALLOC_ENABLE once, at its first allocation, so this must
    run before it is imported; where the kernel has transparent huge pages
    off it changes nothing.
    """
    if command == "train" and "torch" not in sys.modules:
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def main(argv: Sequence[str] | None = None) -> int:
    _one_line_warnings()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    _huge_pages(command)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except CausalFuseError as exc:
        print(f"causalfuse {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"causalfuse {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        # The system refused a file operation the commands do not check for
        # beforehand (disk full, a file removed while the work ran, ...): say
        # which file and why, in one line.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"causalfuse {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
