"""What every ``python -m ...`` of the project shares: its parser, its input checks, its progress bars.

* ``make_parser``: an ``argparse`` parser named for its real invocation
  (``prog="python -m batch_scoring.scoring.train"``), showing each option's default and, in
  its epilog, the environment variables the command reads with their defaults;
* ``input_path`` / ``read_parquet``: an input that is missing or unreadable
  becomes one ``InputError`` naming the path and what it should have been;
* ``run``: calls a CLI's body and turns an ``InputError`` into one line on
  stderr (``error: <path>: No such file or directory (expected ...)``) and exit
  code 2, never a traceback;
* ``progress``: a ``tqdm`` bar on stderr over a long loop, silent when stderr
  is not a terminal (logs, tests, Azure ML jobs), so stdout stays what scripts parse.

No Airflow here: the scoring jobs import it on Azure ML.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

NO_ENV = "environment variables: none read."


class InputError(Exception):
    """An input file or folder is missing or unreadable; its message names the path and what it should be."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (not a ``None`` or ``False`` one: nothing to show) and keeps the
    description's and epilog's own line breaks."""

    def _format_action(self, action):
        if not action.help and action.option_strings and not _nothing_to_show(action.default):
            action = copy.copy(action)
            action.help = "default: %(default)s"
        return super()._format_action(action)

    def _get_help_string(self, action):
        if _nothing_to_show(action.default):
            return action.help or ""
        return super()._get_help_string(action)


def _nothing_to_show(default) -> bool:
    return default is None or default is False or default is argparse.SUPPRESS


def env_epilog(env) -> str:
    """The epilog text listing ``env``: ``(NAME, default, what)`` triples, one per line (``NO_ENV`` when empty)."""
    if not env:
        return NO_ENV
    width = max(len(name) for name, _, _ in env)
    lines = [f"  {name:<{width}}  {what} (default: {default})" for name, default, what in env]
    return "environment variables read:\n" + "\n".join(lines)


def make_parser(prog: str, description: str, env=(), epilog: str = "") -> argparse.ArgumentParser:
    """A parser for ``prog`` (the real invocation, e.g. ``python -m batch_scoring.scoring.train``).

    ``env``: ``(NAME, default, what)`` triples of the environment variables the
    command reads, listed in the epilog after ``epilog``; defaults are shown by
    ``HelpFormatter``.
    """
    text = "\n\n".join(part for part in (epilog.strip("\n"), env_epilog(env)) if part)
    return argparse.ArgumentParser(prog=prog, description=description, epilog=text, formatter_class=HelpFormatter)


def input_path(path, what: str, directory: bool = False) -> Path:
    """``path`` as a ``Path`` once it exists, is a file (or a folder with ``directory``) and is readable.

    ``what``: what the path should hold, e.g. ``"--aggregates: parquet file"``.
    Raises ``InputError`` (``<path>: No such file or directory (expected <what>)``,
    ``Is a directory``, ``Not a directory`` or ``Permission denied``).
    """
    p = Path(path)
    if not p.exists():
        why = "No such file or directory"
    elif directory and not p.is_dir():
        why = "Not a directory"
    elif not directory and p.is_dir():
        why = "Is a directory"
    elif not os.access(p, os.R_OK | (os.X_OK if directory else 0)):
        why = "Permission denied"
    else:
        return p
    raise InputError(f"{p}: {why} (expected {what})")


def read_parquet(path, what: str, **kwargs):
    """``pandas.read_parquet(path, **kwargs)`` after ``input_path``; a file that is not parquet raises ``InputError``."""
    import pandas as pd
    import pyarrow as pa

    p = input_path(path, what)
    try:
        return pd.read_parquet(p, **kwargs)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{p}: not a readable parquet file ({' '.join(str(exc).split())}) (expected {what})") from None


def run(body, *args) -> int:
    """``body(*args)``'s exit code; an ``InputError`` is printed as one ``error: ...`` line on stderr and gives 2."""
    try:
        return body(*args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def progress(iterable, desc: str, total: int | None = None, unit: str = "it"):
    """``iterable`` wrapped in a ``tqdm`` bar on stderr, disabled when stderr is not a terminal.

    Updates at most ~10 times a second, so a loop of thousands of items pays
    next to nothing. The bar is removed when done (``leave=False``): the CLI's
    own summary line is what stays.
    """
    from tqdm import tqdm

    # tqdm's own rule (disable=None) spelled out, so that a stand-in stderr without isatty (an Airflow
    # task's log stream, say) counts as "not a terminal" too instead of getting bars
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not _is_terminal(sys.stderr), leave=False,
                file=sys.stderr, mininterval=0.1, dynamic_ncols=True)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def read_targets(names, path=None) -> list[str]:
    """``names`` (``device/sensor`` strings) plus those of the targets file ``path``, in that order.

    The file holds one ``device/sensor`` per line, blank lines and ``#``
    comments ignored, or a JSON list. Raises ``InputError`` when ``path`` is
    missing or unreadable, or starts with ``[`` but is no JSON list.
    """
    import json

    names = list(names or [])
    if path:
        text = input_path(path, "--targets-file: one device/sensor per line, or a JSON list").read_text()
        if text.lstrip().startswith("["):
            try:
                names += [str(t) for t in json.loads(text)]
            except ValueError as exc:
                raise InputError(f"{path}: not a JSON list ({exc}) (expected --targets-file: a JSON list of device/sensor)") from None
        else:
            names += [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]
    return names
