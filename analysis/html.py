"""HTML building blocks of the report: tables, notes, embedded PNGs and links to MLflow runs."""

from __future__ import annotations

import base64
import html
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

_RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")  # MLflow run ids: 32 lower-case hex digits


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI page of a run (``<uri>/#/experiments/<exp>/runs/<run>``) when the tracking
    server is HTTP(S); None for a local store, which has no UI address of its own."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


@dataclass(frozen=True)
class Linker:
    """Turns the known run ids in escaped HTML text into links to their MLflow pages."""

    tracking_uri: str
    experiment_id: str
    run_ids: frozenset[str] = field(default_factory=frozenset)

    def __call__(self, escaped: str) -> str:
        def link(match: re.Match[str]) -> str:
            run = match.group(0)
            url = run_url(self.tracking_uri, self.experiment_id, run)
            if url is None or run not in self.run_ids:
                return run
            return f'<a href="{html.escape(url)}">{run}</a>'

        return _RUN_ID.sub(link, escaped)


def table(frame: pd.DataFrame, css_class: str, linker: Linker | None = None) -> str:
    """A DataFrame as an escaped HTML table (its index as the first column)."""
    text = frame.reset_index().to_html(escape=True, classes=css_class, border=0, index=False)
    return linker(text) if linker else text


def note(text: str, linker: Linker | None = None) -> str:
    escaped = html.escape(text)
    return f'<p class="note">{linker(escaped) if linker else escaped}</p>'


def heading(level: int, text: str, anchor: str | None = None) -> str:
    ident = f' id="{html.escape(anchor)}"' if anchor else ""
    return f"<h{level}{ident}>{html.escape(text)}</h{level}>"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path}: not a PNG file")
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def img(path: Path, alt: str) -> str:
    """The PNG embedded as base64, with its pixel size so the page shows it 1:1 (text in the
    figures is sized for that)."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    width, height = png_size(path)
    return (
        f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" '
        f'alt="{html.escape(alt)}">'
    )


def preformatted(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def links_note(paths: Iterable[Path]) -> str:
    """``Files: results.csv, tables.csv ...`` as relative links (they sit beside report.html)."""
    items = ", ".join(f'<a href="{html.escape(p.name)}">{html.escape(p.name)}</a>' for p in paths)
    return f'<p class="note">Files beside this report: {items}</p>'
