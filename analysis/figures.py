"""Explainability: map-vs-gaze agreement table, heatmap panels and ROC curves per arm.

``python -m analysis.figures --tracking-uri URI --experiment NAME [--out DIR] [--parent RUN_ID]``

Reads each arm's best run (chosen on validation, as for the tables): ``explain/test.csv`` for the
agreement table (``explain.md`` / ``explain.csv``), ``heatmaps/maps.npz`` for the panels (like the
paper's Figures 9-11: one figure per test image, at most ``PANEL_IMAGES``; rows = the arms that
train a map; input, gaze, GBP, deconvNet and decoder maps in the one panel order; drawn by
``trainables.panels``, the renderer the trials use; ``panel_caption`` says how to read them), and
``predictions/test.csv`` for the ROC curves (small multiples: each arm against the baseline, per
class). PNGs via matplotlib's object API (no pyplot state), sized to be shown 1:1.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.cli import run_cli, write_and_log
from analysis.formats import format_auc, markdown_table
from analysis.paper import ARM_LABELS, report_arms
from analysis.roc import ROC_NOTE, draw_roc, roc_figure  # noqa: F401  (the figures command draws it)
from trainables.data.keys import UnsafeName, safe_child
from trainables.generators import generator_title, paper_generators
from trainables.metrics import SALIENCY_KEYS, bootstrap_indices, percentile_summary
from trainables.model_sets import get_arm
from trainables.panels import (
    PanelRow,
    PanelStyle,
    ordered_columns,
    panel_figure,
    save,
    title_for,
)
from trainables.record import EXPLAIN, MAPS
from trainables.record.reader import Record, Study
from trainables.record.trial import Trial

log = logging.getLogger(__name__)

MAP_KINDS: tuple[str, ...] = ("generator", "decoder")


PANEL_IMAGES = 4  # test images drawn in the report's heatmap panels
PANEL_CELL_IN = 1.3  # side of one image there (the trials' own panels: 1.75)


def panel_columns() -> tuple[str, ...]:
    """The report's panel columns, in the one panel order (``trainables.panels.ordered_columns``):
    the input, gaze, the paper's generators' maps (GBP, deconvNet) as in its Figures 9-11, and
    the decoder."""
    return ordered_columns(("image", "gaze", *paper_generators(), "decoder"))


def trains_a_map(arm: str) -> bool:
    """Whether the arm's loss trains a map (its decoder or a generator's); True for an arm the
    registry does not know."""
    try:
        a = get_arm(arm)
    except KeyError:
        return True
    return a.uses_decoder or a.needs_map != "none"


def own_generator(arm: str) -> str | None:
    """The generator in the arm's loss, None when it trains with none (or is unknown)."""
    try:
        gen = get_arm(arm).generator
    except KeyError:
        return None
    return None if gen == "none" else gen


def panel_caption(arms: Sequence[str], n_images: int) -> str:
    """What a reader needs to read the panels: which class, which scale, which images, whose
    map."""
    gens = " and ".join(generator_title(g) for g in paper_generators())
    shown = ", ".join(arms)
    return (
        f"Rows: the arms that train a map ({shown}), each its best run; no-seg trains none. "
        f"Which class: the {gens} are computed for the class each model predicted (named left "
        f"of its row with every class probability and whether it is right); the gaze and "
        f"decoder maps do not depend on a class. Scale: gaze is the fixation density divided by "
        f"its maximum; each {gens.replace(' and ', ' or ')} is the map's magnitude divided by its "
        f"own maximum (per image and model), so 1 is that map's peak, not a shared level; the "
        f"decoder map is the decoder's sigmoid output stretched to its own minimum-maximum per "
        f"image (the range printed in the cell), so its pattern shows whatever its level. "
        f"Images: {n_images} test images, the first by key of each class in turn (fixed before "
        f"training, the same in every trial: not chosen by result). Own map: the framed cell is "
        f"the map of the generator in the arm's loss (its row says 'own map'; unet's loss has "
        f"none); n/a: the arm trains no decoder."
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


def panel_figures(
    record: Record,
    best: Mapping[str, Trial | None],
    out_dir: Path,
    classes: Sequence[str],
    images: int = PANEL_IMAGES,
) -> tuple[list[Path], list[str]]:
    """One PNG per panel image (at most ``images``, keys every arm drew, in the trials' order):
    rows = the arms that train a map, columns = ``panel_columns``, drawn by the trials' own
    renderer (``trainables.panels``).

    Returns:
        The PNGs and the arms drawn (rows, top to bottom).
    """
    maps = {arm: m for arm, m in _panel_arms(record, best).items() if trains_a_map(arm)}
    if not maps:
        return [], []
    common = set.intersection(*(set(map(str, m["keys"])) for m in maps.values()))
    first = next(iter(maps.values()))
    keys = [str(k) for k in first["keys"] if str(k) in common][:images]
    if not keys:
        log.warning("the arms' heatmap panels share no image key: no panel figures")
    paths, columns = [], panel_columns()
    style = PanelStyle(cell_in=PANEL_CELL_IN)
    for key in keys:
        rows, label = [], None
        for arm, arrays in maps.items():
            k = int(np.flatnonzero(arrays["keys"] == key)[0])
            label = int(arrays["labels"][k])
            gen = own_generator(arm)
            rows.append(
                PanelRow(
                    label=ARM_LABELS.get(arm, arm),
                    image=arrays["image"][k],
                    maps={name: arrays[name][k] for name in columns[1:] if name in arrays},
                    probs=arrays["probs"][k],
                    true_label=label,
                    classes=classes,
                    own=gen if gen in columns else None,
                )
            )
        try:  # keys come from the runs' maps.npz: never a path out of out_dir
            path = safe_child(out_dir, f"panel_{key}.png")
        except UnsafeName as err:
            log.warning("heatmap panel skipped: %s", err)
            continue
        fig = panel_figure(rows, columns, title_for(key, label, classes), style=style)
        paths.append(save(fig, path))
    return paths, list(maps)


@dataclass(frozen=True)
class FiguresOutput:
    """What write_figures built and wrote."""

    explain: pd.DataFrame
    explain_markdown: str
    panels: list[Path]
    panel_caption: str  # what the panels show, and how (report)
    roc: Path | None
    roc_aucs: dict[str, dict[str, float]]  # arm -> AUC key -> the AUC the ROC legend shows
    files: list[Path]


def write_figures_from(record: Record, study: Study, out_dir: Path) -> FiguresOutput:
    """Write the agreement table (``explain.md``, ``explain.csv``), panels and ``roc.png``."""
    best = study.best_of(report_arms(study.dataset, study.arms))
    out_dir.mkdir(parents=True, exist_ok=True)
    boot = study.bootstrap
    summary = explain_summary(record, best, resamples=boot.resamples, seed=boot.seed)
    markdown = explain_markdown(summary)
    (out_dir / "explain.md").write_text(markdown)
    summary.to_csv(out_dir / "explain.csv", index=False)
    panels, panel_arms = panel_figures(record, best, out_dir, study.task.classes)
    roc, roc_aucs = roc_figure(record, best, out_dir, study.task)
    files = [out_dir / "explain.md", out_dir / "explain.csv", *panels, *([roc] if roc else [])]
    caption = panel_caption(panel_arms, len(panels))
    return FiguresOutput(summary, markdown, panels, caption, roc, roc_aucs, files)


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
