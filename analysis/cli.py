"""The flags and error handling every analysis entry point shares."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from analysis.records import DEFAULT_EXPERIMENT

T = TypeVar("T")


def parser(description: str) -> argparse.ArgumentParser:
    """The CLI flags every analysis entry point shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (default: <project>/mlflow.db)")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment name")
    p.add_argument("--out", type=Path, default=Path("outputs/analysis"), help="output folder")
    p.add_argument("--parent", default=None, help="study run id (default: the latest)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (>= 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--no-log", action="store_true", help="do not log outputs to the parent run")
    return p


def run_cli(
    description: str,
    write: Callable[..., T],
    show: Callable[[T], str],
    argv: Sequence[str] | None,
) -> int:
    """The analysis CLIs: parse the shared flags, call ``write``, print ``show(result)``.

    Errors about the record (unknown experiment or run, arms with different test keys, a malformed
    or missing artifact) print one line and exit 2 instead of a traceback.
    """
    args = parser(description).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = write(
            args.tracking_uri, args.experiment, args.out, parent=args.parent,
            resamples=args.resamples, seed=args.seed, log_to_mlflow=not args.no_log,
        )  # fmt: skip
    except (KeyError, ValueError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err  # str() quotes
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(show(result))
    return 0
