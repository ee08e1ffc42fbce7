"""Reading a dataset's tables and paths as untrusted input: required columns checked, UTF-8 checked,
and relative paths that must stay inside their root."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import pandas as pd


def read_csv_checked(path: Path, required: Sequence[str], **kwargs) -> pd.DataFrame:
    """Read a CSV after checking its header has every required column.

    Raises:
        FileNotFoundError: the file does not exist (message names it).
        ValueError: columns are missing (message names the file and the columns), or the file is
            not UTF-8 (message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(
                f"{path}: missing required columns {missing} (header has {len(header)} "
                f"columns: {header[:8]}{'...' if len(header) > 8 else ''})"
            )
        return pd.read_csv(path, encoding="utf-8-sig", **kwargs)
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.start + 1]
        raise ValueError(
            f"{path}: not UTF-8 text ({exc.reason}, byte {bad!r}); the dataset tables are "
            f"UTF-8: convert this file (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def inside(root: Path, rel: str) -> Path | None:
    """``root / rel`` with symlinks and ``..`` resolved, or None when that leaves ``root``.

    The sheet is input, not code: an absolute path, ``../..`` or a symlink out of the tree
    must not make a reader open arbitrary files. An empty path is None too.
    """
    if not rel or Path(rel).is_absolute():
        return None
    path = (root / rel).resolve()
    return path if path.is_relative_to(root) and path != root else None
