"""The flags and error handling every analysis command shares (``gaze-study verdict|tables|
figures|doctor|report``, also ``python -m analysis.<name>``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from trainables.record.reader import Record
from trainables.record.store import DEFAULT_EXPERIMENT, StoreUnreachable, check_reachable

T = TypeVar("T")


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The CLI flags every analysis command shares."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db)")  # fmt: skip
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment name (default: %(default)s)")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("outputs/analysis"), help="output folder (default: %(default)s)")  # fmt: skip
    p.add_argument("--parent", default=None, help="study run id (default: the latest study)")
    p.add_argument("--log", action="store_true", help="also log the outputs to the study's parent run under analysis/ (default: read only)")  # fmt: skip
    return p


def write_and_log(
    write_from: Callable[..., Any],
    tracking_uri: str | None,
    experiment: str,
    out_dir: Path | str,
    *,
    parent: str | None = None,
    log_to_mlflow: bool = False,
) -> Any:
    """Run ``write_from(record, study, out_dir)`` on a study (latest, or ``parent``); with
    ``log_to_mlflow``, log the files it wrote to the study's parent run (the shared body of the
    analysis entry points). Reading changes nothing in the store."""
    record = Record(tracking_uri)
    study = record.study(experiment, parent)
    out = write_from(record, study, Path(out_dir))
    if log_to_mlflow:
        record.log_outputs(study, out.files)
    return out


def run_cli(prog: str, description: str, write: Callable[..., T], show: Callable[[T], str], argv: Sequence[str] | None) -> int:  # fmt: skip
    """The analysis CLIs: parse the shared flags, call ``write``, print ``show(result)``.

    Errors about the record (unknown experiment or run, arms with different test keys, a malformed
    or missing artifact, an unreachable server) print one line and exit 2 instead of a traceback.
    """
    args = parser(prog, description).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.tracking_uri:
            check_reachable(args.tracking_uri)
        result = write(args.tracking_uri, args.experiment, args.out, parent=args.parent, log_to_mlflow=args.log)  # fmt: skip
    except (KeyError, ValueError, FileNotFoundError, StoreUnreachable) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err  # str() quotes
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(show(result))
    return 0
