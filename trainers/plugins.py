"""Reaching a user's own environments and strategies from the command line.

Two ways, both for every command (``diffenvs-train``, ``-sweep``, ``-compare``, ``-diagnose``,
``-plot``, ``-baseline``):

* ``--import MODULE`` (repeatable): the module is imported before the task and strategy are parsed, so
  its calls of :func:`diffenvs.register` and :func:`trainers.strategies.register` take effect;
* entry points of installed packages, loaded on the first look-up of an unknown name: group
  ``diffenvs.environments`` (name -> environment factory, :mod:`diffenvs.registry`) and group
  ``diffenvs.strategies`` (name -> a Strategy or a factory of strategies, :mod:`trainers.strategies.base`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

IMPORT_HELP = ("import this Python module first (repeatable), e.g. one that registers an environment with "
               "diffenvs.register or a strategy with trainers.strategies.register")


def add_import_flag(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` the ``--import MODULE`` flag (repeatable; the modules are imported by
    :func:`import_modules` before the parser runs)."""
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help=IMPORT_HELP)


def import_modules(argv: Sequence[str] | None, prog: str) -> list[str]:
    """Import the modules named by ``--import`` in ``argv`` (default ``sys.argv[1:]``), in order.

    A module that cannot be imported ends the program with a one-line error naming it (exit status 2).
    Returns the module names."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--import", dest="imports", action="append", default=[])
    known, _ = pre.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    for name in known.imports:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - any failure of the user's module is reported in one line
            print(f"{prog}: error: --import: cannot import module {name!r}: {type(error).__name__}: {error}",
                  file=sys.stderr)
            raise SystemExit(2) from None
    return list(known.imports)
