"""Explainability: map-vs-gaze agreement table, heatmap panels and ROC curves per arm.

``python -m analysis.figures --tracking-uri URI --experiment NAME [--out DIR] [--parent RUN_ID]``

Reads each arm's best run (chosen on validation, as for the tables): ``explain/test.csv`` for the
agreement table (``explain.md`` / ``explain.csv``), ``heatmaps/maps.npz`` for the panels (like the
paper's Figures 9-11: rows = arms; input, GBP, deconvNet, gaze and decoder maps; drawn by
``trainables.panels``, the renderer the trials use), and ``predictions/test.csv`` for the ROC
curves. PNGs via matplotlib's object API (no pyplot state), sized to be shown 1:1.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.metrics import roc_curve

from analysis.cli import run_cli, write_and_log
from analysis.formats import format_auc, markdown_table
from analysis.paper import ARM_LABELS, table_arms
from trainables.config import CLASSES
from trainables.data.keys import UnsafeName, safe_child
from trainables.generators import paper_generators
from trainables.metrics import SALIENCY_KEYS, bootstrap_indices, per_class_auc, percentile_summary
from trainables.panels import DPI, FONT_PT, PanelRow, panel_figure, save, title_for
from trainables.record import AUC_KEYS, EXPLAIN, MAPS, PROB_COLUMNS
from trainables.record.reader import Record, Study
from trainables.record.trial import Trial

log = logging.getLogger(__name__)

MAP_KINDS: tuple[str, ...] = ("generator", "decoder")


def panel_columns() -> tuple[str, ...]:
    """The report's panel columns, as the paper's Figures 9-11: the input, the paper's generators'
    maps (GBP, deconvNet), gaze, decoder."""
    return ("image", *paper_generators(), "gaze", "decoder")


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
    """One PNG per panel image (keys shared by every arm): rows = arms, columns = PANEL_COLUMNS,
    drawn by the trials' own renderer (``trainables.panels``)."""
    maps = _panel_arms(record, best)
    if not maps:
        return []
    keys = sorted(set.intersection(*(set(m["keys"]) for m in maps.values())))
    if not keys:
        log.warning("the arms' heatmap panels share no image key: no panel figures")
    paths, columns = [], panel_columns()
    for key in keys:
        rows, label = [], None
        for arm, arrays in maps.items():
            k = int(np.flatnonzero(arrays["keys"] == key)[0])
            label = int(arrays["labels"][k])
            rows.append(
                PanelRow(
                    label=ARM_LABELS.get(arm, arm),
                    image=arrays["image"][k],
                    maps={name: arrays[name][k] for name in columns[1:] if name in arrays},
                    probs=arrays["probs"][k],
                    true_label=label,
                )
            )
        try:  # keys come from the runs' maps.npz: never a path out of out_dir
            path = safe_child(out_dir, f"panel_{key}.png")
        except UnsafeName as err:
            log.warning("heatmap panel skipped: %s", err)
            continue
        paths.append(save(panel_figure(rows, columns, title_for(key, label)), path))
    return paths


ROC_NOTE = (
    "One-vs-rest ROC curves of each arm's best run on the whole test set. The AUC in the legend is "
    "the area under the drawn curve: the same whole-test-set AUC as the tables and results.csv "
    "(scikit-learn's roc_auc_score, ties counted one half)."
)
_LINESTYLES = ("-", "--", ":", "-.")  # arms with identical predictions stay visible


def roc_figure(
    record: Record, best: Mapping[str, Trial | None], out_dir: Path
) -> tuple[Path | None, dict[str, dict[str, float]]]:
    """``roc.png`` of each arm's best run (see :func:`draw_roc`).

    Returns:
        The path (None without any finished arm) and ``arm -> AUC key -> AUC`` as shown.
    """
    present = {arm: record.predictions(t.run_id) for arm, t in best.items() if t is not None}
    if not present:
        return None, {}
    fig, shown = draw_roc(present)
    return save(fig, out_dir / "roc.png"), shown


def draw_roc(predictions: Mapping[str, pd.DataFrame]) -> tuple[Figure, dict[str, dict[str, float]]]:
    """One panel per class, one curve per arm, one legend below the panels (never over a curve).

    Args:
        predictions: arm -> its ``predictions/test.csv`` frame.

    Returns:
        The figure and ``arm -> AUC key -> AUC`` (``per_class_auc``, as the tables) it shows.
    """
    present = predictions
    n_cls, side = len(CLASSES), 3.3
    legend_rows = -(-len(present) // 2)
    bottom_in = 0.75 + 0.24 * legend_rows + 0.25  # axis labels, legend, padding
    width, height = 0.75 + n_cls * side + (n_cls - 1) * 0.55 + 0.2, 0.45 + side + bottom_in
    fig = Figure(figsize=(width, height), dpi=DPI)
    lefts = [0.75 + c * (side + 0.55) for c in range(n_cls)]
    axes = [
        fig.add_axes((x / width, bottom_in / height, side / width, side / height)) for x in lefts
    ]
    shown: dict[str, dict[str, float]] = {}
    handles = []
    for i, (arm, frame) in enumerate(present.items()):
        labels = frame["label"].to_numpy()
        probs = frame[list(PROB_COLUMNS)].to_numpy(dtype=np.float64)
        shown[arm] = per_class_auc(labels, probs)
        style = {"lw": 1.4, "ls": _LINESTYLES[i % len(_LINESTYLES)], "color": f"C{i % 10}"}
        for c, ax in enumerate(axes):
            positive = labels == c
            if positive.all() or not positive.any():
                continue
            fpr, tpr, _ = roc_curve(positive, probs[:, c])
            ax.plot(fpr, tpr, **style)
        aucs = ", ".join(
            f"{CLASSES[c]} {format_auc(shown[arm][k])}" for c, k in enumerate(AUC_KEYS[:-1])
        )
        handles.append((Line2D([], [], **style), f"{ARM_LABELS.get(arm, arm)}: {aucs}"))
    for c, ax in enumerate(axes):
        ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=0.8)
        ax.set_title(f"{CLASSES[c]} vs rest", fontsize=FONT_PT + 1)
        ax.set_xlabel("False positive rate", fontsize=FONT_PT)
        ax.set_ylabel("True positive rate" if c == 0 else "", fontsize=FONT_PT)
        ax.tick_params(labelsize=FONT_PT)
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), aspect="equal")
    fig.legend(
        [h for h, _ in handles], [t for _, t in handles], loc="lower center", ncol=2,
        fontsize=FONT_PT, frameon=False, bbox_to_anchor=(0.5, 0.1 / height),
        title="Arm: whole-test-set AUC per class", title_fontsize=FONT_PT,
    )  # fmt: skip
    return fig, shown


@dataclass(frozen=True)
class FiguresOutput:
    """What write_figures built and wrote."""

    explain: pd.DataFrame
    explain_markdown: str
    panels: list[Path]
    roc: Path | None
    roc_aucs: dict[str, dict[str, float]]  # arm -> AUC key -> the AUC the ROC legend shows
    files: list[Path]


def write_figures_from(record: Record, study: Study, out_dir: Path) -> FiguresOutput:
    """Write the agreement table (``explain.md``, ``explain.csv``), panels and ``roc.png``."""
    best = study.best_of(table_arms())
    out_dir.mkdir(parents=True, exist_ok=True)
    boot = study.bootstrap
    summary = explain_summary(record, best, resamples=boot.resamples, seed=boot.seed)
    markdown = explain_markdown(summary)
    (out_dir / "explain.md").write_text(markdown)
    summary.to_csv(out_dir / "explain.csv", index=False)
    panels = panel_figures(record, best, out_dir)
    roc, roc_aucs = roc_figure(record, best, out_dir)
    files = [out_dir / "explain.md", out_dir / "explain.csv", *panels, *([roc] if roc else [])]
    return FiguresOutput(summary, markdown, panels, roc, roc_aucs, files)


def write_figures(
    tracking_uri: str | None,
    experiment: str,
    out_dir: Path,
    *,
    parent: str | None = None,
    log_to_mlflow: bool = False,
) -> FiguresOutput:
    """Figures of the study (latest, or ``parent``), written to ``out_dir`` (and the parent run)."""
    return write_and_log(write_figures_from, tracking_uri, experiment, out_dir, parent=parent, log_to_mlflow=log_to_mlflow)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the agreement table and the written files."""
    return run_cli(
        "gaze-study figures",
        "Explainability table, heatmap panels and ROC curves.",
        write_figures,
        lambda out: out.explain_markdown + "\nwrote " + ", ".join(str(f) for f in out.files),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
