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
_SHORT_RUN = re.compile(r"\brun ([0-9a-f]{8})\b")  # "run 1a2b3c4d" in text already shortened


LOCAL_UI = "http://127.0.0.1:5000"  # where ``mlflow ui`` serves a local store by default
SHORT_ID = 8  # characters of a run id shown (the whole id in the link's title)


def ui_base(tracking_uri: str) -> str:
    """The MLflow UI of a store: an HTTP(S) tracking server itself, else ``mlflow ui``'s default
    address (start it with ``mlflow ui --backend-store-uri <uri>``)."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return LOCAL_UI


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run (``<ui>/#/experiments/<exp>/runs/<run>``)."""
    return f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}"


@dataclass(frozen=True)
class Linker:
    """Turns the known run ids in escaped HTML text into links to their MLflow pages, shown by
    their first ``SHORT_ID`` characters (the whole id is the link's title)."""

    tracking_uri: str
    experiment_id: str
    run_ids: frozenset[str] = field(default_factory=frozenset)

    def __call__(self, escaped: str) -> str:
        def link(match: re.Match[str]) -> str:
            run = match.group(0)
            if run not in self.run_ids:
                return run
            url = html.escape(run_url(self.tracking_uri, self.experiment_id, run))
            return f'<a class="run" href="{url}" title="run {run}">{run[:SHORT_ID]}</a>'

        def short(match: re.Match[str]) -> str:
            full = [r for r in self.run_ids if r.startswith(match.group(1))]
            return f"run {link(_Whole(full[0]))}" if len(full) == 1 else match.group(0)

        return _SHORT_RUN.sub(short, _RUN_ID.sub(link, escaped))


class _Whole:
    """A stand-in match of a whole run id (``Linker`` links a prefix through it)."""

    def __init__(self, run: str) -> None:
        self.run = run

    def group(self, _i: int) -> str:
        return self.run


def table(frame: pd.DataFrame, css_class: str, linker: Linker | None = None) -> str:
    """A DataFrame as an escaped HTML table (its index as the first column), in a box that
    scrolls rather than widen the page (the report's tables are sized not to need it)."""
    text = frame.reset_index().to_html(escape=True, classes=css_class, border=0, index=False)
    return f'<div class="table-wrap">{linker(text) if linker else text}</div>'


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


def details(summary: str, inner: str) -> str:
    """A collapsed block (long raw material: the page stays short); printed open."""
    return f"<details><summary>{html.escape(summary)}</summary>{inner}</details>"


def links_note(paths: Iterable[Path]) -> str:
    """``Files: results.csv, tables.csv ...`` as relative links (they sit beside report.html)."""
    items = ", ".join(f'<a href="{html.escape(p.name)}">{html.escape(p.name)}</a>' for p in paths)
    return f'<p class="note">Files beside this report: {items}</p>'


def toc(entries: Iterable[tuple[str, str]]) -> str:
    """A table of contents: ``(anchor, title)`` pairs as a list of in-page links."""
    items = "".join(
        f'<li><a href="#{html.escape(a)}">{html.escape(t)}</a></li>' for a, t in entries
    )
    return f'<nav class="toc"><h2>Contents</h2><ol>{items}</ol></nav>'


def caption(text: str) -> str:
    """A figure's caption (what a reader needs to read it), under the figure."""
    return f'<p class="caption">{html.escape(text)}</p>'


def verdict(selection: str, sentence: str, linker: Linker | None = None) -> str:
    """The verdict paragraph: which arm is selected (bold), then the one sentence."""
    sel, sen = html.escape(selection), html.escape(sentence)
    text = f"<strong>{sel}</strong> {sen}"
    return f'<p class="verdict">{linker(text) if linker else text}</p>'


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 78em; padding: 0 1em;
       color: #222; line-height: 1.35; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
p.verdict { font-size: 1.05em; background: #f2f6fc; border-left: 4px solid #3465a4;
            padding: 0.6em 0.9em; max-width: 70em; }
nav.toc ol { columns: 2; max-width: 50em; font-size: 0.95em; }
nav.toc h2 { border: none; font-size: 1.1em; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.45em; text-align: left; vertical-align: top;
         overflow-wrap: break-word; }
table.config td, table.data-other td { overflow-wrap: anywhere; }  /* long param values */
th { background: #eee; }
p.note, p.caption { font-size: 0.85em; color: #555; max-width: 70em; }
p.caption { color: #333; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; margin: 0.4em 0; display: block; }
pre { background: #f6f6f6; padding: 0.8em; font-size: 0.8em; white-space: pre-wrap;
      overflow-wrap: anywhere; }
a.run { font-family: ui-monospace, monospace; }
@media print {
  @page { size: A4 landscape; margin: 10mm; }
  body { max-width: none; margin: 0; padding: 0; font-size: 9pt; }
  nav.toc { display: none; }
  .table-wrap { overflow: visible; }
  table { font-size: 7pt; width: 100%; }
  th, td { padding: 1px 3px; overflow-wrap: anywhere; }
  tr, img, p.verdict { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  a { color: inherit; text-decoration: none; }
  img { max-height: 180mm; width: auto; }
  details::details-content { content-visibility: visible; display: contents; }
  summary { list-style: none; font-weight: bold; }
}
"""
