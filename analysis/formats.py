"""Text formatting shared by the tables, the explainability table and the report."""

from __future__ import annotations

import math

import pandas as pd

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def format_auc(x: float) -> str:
    """Three decimals, as the paper prints AUCs; "n/a" for nan."""
    return "n/a" if not math.isfinite(x) else f"{x:.3f}"


def format_p(p: float | None, latex: bool = False) -> str:
    """As the paper prints p: three decimals from 0.01, else mantissa x 10^exponent (Unicode
    superscripts, so Markdown and HTML show it without markup)."""
    if p is None:
        return ""
    if not math.isfinite(p):
        return "n/a"
    if p >= 0.01:
        return f"{p:.3f}"
    mantissa, exponent = f"{p:.3e}".split("e")
    if latex:
        return f"${mantissa}\\times10^{{{int(exponent)}}}$"
    return f"{mantissa}×10{str(int(exponent)).translate(_SUPERSCRIPT)}"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-Markdown pipe table (pandas' to_markdown needs the optional tabulate package)."""
    header = [frame.index.name or ""] + list(frame.columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(i), *map(str, r)]) + " |" for i, r in frame.iterrows()]
    return "\n".join(lines)
