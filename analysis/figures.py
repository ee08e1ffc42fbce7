"""Explainability: map-vs-gaze agreement table, heatmap panels and ROC curves per arm.

``python -m analysis.figures --tracking-uri URI --experiment NAME [--out DIR] [--parent RUN_ID]``

Reads each arm's best run (chosen on validation, as for the tables): ``explain/test.csv`` for the
agreement table (``explain.md`` / ``explain.csv``), ``heatmaps/maps.npz`` for the panels (like the
paper's Figures 9-11: rows = arms; input, GBP, deconvNet, gaze and decoder maps), and
``predictions/test.csv`` for the ROC curves. PNGs via matplotlib's Agg canvas (no pyplot state).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from analysis.cli import run_cli
from analysis.formats import format_auc, markdown_table
from analysis.paper import ARM_LABELS, table_arms
from analysis.records import (
    EXPLAIN,
    MAPS,
    PROB_COLUMNS,
    Record,
    Study,
    Trial,
    best_trials,
    write_and_log,
)
from trainables.config import CLASSES
from trainables.metrics import SALIENCY_KEYS, bootstrap_indices, per_class_auc, percentile_summary

log = logging.getLogger(__name__)

MAP_KINDS: tuple[str, ...] = ("generator", "decoder")
PANEL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("image", "Input"),
    ("gbp", "GBP map"),
    ("deconv", "deconvNet map"),
    ("gaze", "Gaze map"),
    ("decoder", "Decoder map"),
)
METRIC_NAMES = {"cc": "CC ↑", "kl": "KL ↓", "nss": "NSS ↑", "auc_judd": "AUC-Judd ↑"}


def explain_summary(
    record: Record,
    best: Mapping[str, Trial | None],
    *,
    resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Mean map-vs-gaze metrics per arm and map with percentile-bootstrap CIs over the images.

    Rows with a non-finite metric (e.g. a constant map has no CC) are left out and counted in
    ``excluded``; an arm whose run has no ``explain/test.csv`` is skipped with a warning.

    Returns:
        One row per (arm, map): ``arm, map, generator, run_id, n, excluded`` and, per metric,
        ``<m>``, ``<m>_low``, ``<m>_high``.
    """
    rows = []
    for arm, trial in best.items():
        if trial is None:
            continue
        if not record.has_artifact(trial.run_id, EXPLAIN):
            log.warning("run %s (%s) has no %s: left out", trial.run_id, arm, EXPLAIN)
            continue
        frame = record.explain(trial.run_id)
        for kind in MAP_KINDS:
            part = frame[frame["map"] == kind]
            if part.empty:
                continue
            values = part[list(SALIENCY_KEYS)].to_numpy(dtype=np.float64)
            ok = np.isfinite(values).all(axis=1)
            row = {
                "arm": arm,
                "map": kind,
                "generator": ",".join(sorted(set(part["generator"].astype(str)))),
                "run_id": trial.run_id,
                "n": int(ok.sum()),
                "excluded": int((~ok).sum()),
            }
            values = values[ok]
            if len(values):
                idx = bootstrap_indices(len(values), resamples=resamples, seed=seed)
                means = values[idx].mean(axis=1)  # (B, metrics)
                for j, m in enumerate(SALIENCY_KEYS):
                    _, low, high = percentile_summary(means[:, j], alpha)
                    row |= {m: float(values[:, j].mean()), f"{m}_low": low, f"{m}_high": high}
            rows.append(row)
    columns = ["arm", "map", "generator", "run_id", "n", "excluded"]
    columns += [f"{m}{s}" for m in SALIENCY_KEYS for s in ("", "_low", "_high")]
    return pd.DataFrame.from_records(rows, columns=columns)


EXPLAIN_NOTE = (
    "Map-vs-gaze agreement on the test set (MIT/Tuebingen saliency-benchmark definitions; NSS and "
    "AUC-Judd on the top decile of the gaze density): mean over images with a percentile-bootstrap "
    "95% CI of the mean. generator = the arm's GBP/deconvNet map, decoder = the U-Net decoder "
    "output."
)


def explain_display(summary: pd.DataFrame) -> pd.DataFrame:
    """The agreement table as display strings: ``mean (2.5th, 97.5th)`` per metric."""
    data = {}
    for _, r in summary.iterrows():
        label = f"{ARM_LABELS.get(r['arm'], r['arm'])}, {r['map']} ({r['n']} images)"
        data[label] = [
            f"{format_auc(r[m])} ({format_auc(r[f'{m}_low'])}, {format_auc(r[f'{m}_high'])})"
            for m in SALIENCY_KEYS
        ]
    columns = [METRIC_NAMES[m] for m in SALIENCY_KEYS]
    frame = pd.DataFrame.from_dict(data, orient="index", columns=columns)
    frame.index.name = "Arm, map"
    return frame


def explain_markdown(summary: pd.DataFrame) -> str:
    """The agreement table in Markdown, with its note."""
    return markdown_table(explain_display(summary)) + "\n\n" + EXPLAIN_NOTE + "\n"


def _panel_arms(record: Record, best: Mapping[str, Trial | None]) -> dict[str, dict]:
    out = {}
    for arm, trial in best.items():
        if trial is not None and record.has_artifact(trial.run_id, MAPS):
            out[arm] = record.maps(trial.run_id)
        elif trial is not None:
            log.warning("run %s (%s) has no %s: no panel row", trial.run_id, arm, MAPS)
    return out


def panel_figures(record: Record, best: Mapping[str, Trial | None], out_dir: Path) -> list[Path]:
    """One PNG per panel image (keys shared by every arm): rows = arms, columns = PANEL_COLUMNS."""
    maps = _panel_arms(record, best)
    if not maps:
        return []
    keys = sorted(set.intersection(*(set(m["keys"]) for m in maps.values())))
    if not keys:
        log.warning("the arms' heatmap panels share no image key: no panel figures")
    paths = []
    for key in keys:
        # A fixed grid instead of a layout engine: constrained layout redraws the figure several
        # times and made each panel ~5x slower to save.
        fig = Figure(figsize=(2.2 * len(PANEL_COLUMNS) + 0.6, 2.2 * len(maps) + 0.5))
        axes = fig.subplots(
            len(maps),
            len(PANEL_COLUMNS),
            squeeze=False,
            gridspec_kw={"left": 0.08, "right": 0.99, "bottom": 0.01, "top": 0.90, "wspace": 0.04},
        )
        label = None
        for i, (arm, arrays) in enumerate(maps.items()):
            k = int(np.flatnonzero(arrays["keys"] == key)[0])
            label = int(arrays["labels"][k])
            image = arrays["image"][k]
            for j, (name, title) in enumerate(PANEL_COLUMNS):
                ax = axes[i, j]
                ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
                heat = arrays[name][k]
                if name != "image" and np.isfinite(heat).all():
                    ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
                elif name != "image":
                    ax.text(0.5, 0.5, "n/a", transform=ax.transAxes, ha="center", color="w")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(title, fontsize=9)
                if j == 0:
                    probs = ", ".join(f"{p:.2f}" for p in arrays["probs"][k])
                    ax.set_ylabel(f"{ARM_LABELS.get(arm, arm)}\np = ({probs})", fontsize=7)
        fig.suptitle(f"Test image {key} ({CLASSES[label]})", fontsize=10)
        path = out_dir / f"panel_{key}.png"
        fig.savefig(path, dpi=80)
        paths.append(path)
    return paths


def roc_figure(record: Record, best: Mapping[str, Trial | None], out_dir: Path) -> Path | None:
    """``roc.png``: one-vs-rest ROC curves, one panel per class, one curve per arm."""
    present = {arm: t for arm, t in best.items() if t is not None}
    if not present:
        return None
    fig = Figure(figsize=(4.2 * len(CLASSES), 4.4))
    grid = {"left": 0.05, "right": 0.99, "bottom": 0.12, "top": 0.93, "wspace": 0.2}
    axes = fig.subplots(1, len(CLASSES), squeeze=False, gridspec_kw=grid)[0]
    for arm, trial in present.items():
        frame = record.predictions(trial.run_id)
        labels = frame["label"].to_numpy()
        probs = frame[list(PROB_COLUMNS)].to_numpy(dtype=np.float64)
        aucs = per_class_auc(labels, probs)
        for c, ax in enumerate(axes):
            positive = labels == c
            if positive.all() or not positive.any():
                continue
            fpr, tpr, _ = roc_curve(positive, probs[:, c])
            auc = aucs[f"auc_{CLASSES[c].lower()}"]
            ax.plot(fpr, tpr, label=f"{ARM_LABELS.get(arm, arm)} ({auc:.3f})", lw=1.2)
    for c, ax in enumerate(axes):
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(
            title=f"{CLASSES[c]} vs rest", xlabel="False positive rate", ylabel="True positive rate"
        )
        ax.set_aspect("equal")
        ax.legend(fontsize=7, loc="lower right")
    path = out_dir / "roc.png"
    fig.savefig(path, dpi=80)
    return path


@dataclass(frozen=True)
class FiguresOutput:
    """What write_figures built and wrote."""

    explain: pd.DataFrame
    explain_markdown: str
    panels: list[Path]
    roc: Path | None
    files: list[Path]


def write_figures_from(
    record: Record, study: Study, out_dir: Path, *, resamples: int = 1000, seed: int = 0
) -> FiguresOutput:
    """Write the agreement table (``explain.md``, ``explain.csv``), panels and ``roc.png``."""
    best = best_trials(record, study, table_arms())
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = explain_summary(record, best, resamples=resamples, seed=seed)
    markdown = explain_markdown(summary)
    (out_dir / "explain.md").write_text(markdown)
    summary.to_csv(out_dir / "explain.csv", index=False)
    panels = panel_figures(record, best, out_dir)
    roc = roc_figure(record, best, out_dir)
    files = [out_dir / "explain.md", out_dir / "explain.csv", *panels, *([roc] if roc else [])]
    return FiguresOutput(summary, markdown, panels, roc, files)


def write_figures(
    tracking_uri: str | None,
    experiment: str,
    out_dir: Path,
    *,
    parent: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
    log_to_mlflow: bool = True,
) -> FiguresOutput:
    """Figures of the study (latest, or ``parent``), written to ``out_dir`` and the parent run."""
    return write_and_log(
        write_figures_from,
        tracking_uri,
        experiment,
        out_dir,
        parent=parent,
        resamples=resamples,
        seed=seed,
        log_to_mlflow=log_to_mlflow,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the agreement table and the written files."""
    return run_cli(
        "Explainability table, heatmap panels and ROC curves.",
        write_figures,
        lambda out: out.explain_markdown + "\nwrote " + ", ".join(str(f) for f in out.files),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
