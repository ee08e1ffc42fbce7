"""The one heatmap-panel renderer: a grid of radiographs with maps overlaid, one row per model.

Used by the fit loop (``heatmaps/<key>.png`` of each trial: input, gaze, generator and decoder
maps), by the report (``analysis.figures``: one row per arm) and by ``study.predict`` (one new
image), always in one column order (``ordered_columns``: input, gaze, generator maps, decoder).
Each row says which class the model predicted, with every class probability by name, and frames
the map of its own generator (the one in its loss); one colour bar gives the scale of the
overlays, and the decoder's map is stretched to its own range per image (printed in the cell). Sizes are fixed in inches at ``DPI`` so text is at
least ``MIN_FONT_PX`` pixels tall when the PNG is shown 1:1 (the report never scales images
down: they are at most ``MAX_WIDTH_PX`` wide). Matplotlib's object API only (no pyplot state),
importable without MLflow.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.text import Text

from trainables.data.keys import UnsafeName, safe_child

log = logging.getLogger(__name__)

DPI = 100
FONT_PT = 9.0  # every text of the renderer: 12.5 px at DPI
MIN_FONT_PX = 10.0  # the smallest readable text at the size shown (report and README promise)
MAX_WIDTH_PX = 1200  # the report shows figures up to this width unscaled
HEAT_CMAP, HEAT_ALPHA = "jet", 0.5
MAP_TITLES: dict[str, str] = {"image": "Input", "gaze": "Gaze map", "decoder": "Decoder map"}


def map_title(key: str) -> str:
    """A column's heading: ``MAP_TITLES``, else the generator registry's title of its map."""
    if key in MAP_TITLES:
        return MAP_TITLES[key]
    from trainables.generators import GENERATORS

    return GENERATORS.entry(key).meta["title"] if key in GENERATORS else key


def ordered_columns(keys: Sequence[str]) -> tuple[str, ...]:
    """The one column order of every panel (trial, report, predict): the input, the gaze map,
    the generators' maps (in the generator registry's order), the decoder map; keys not known
    to either go before the decoder in the given order."""
    from trainables.generators import list_generators

    rank = {"image": 0, "gaze": 1, **{g: 2 + i for i, g in enumerate(list_generators())}}
    known = sorted((k for k in keys if k in rank), key=rank.__getitem__)
    others = [k for k in keys if k not in rank and k != "decoder"]
    return (*known, *others, *(["decoder"] if "decoder" in keys else []))


_CELL_IN = 1.75  # side of one image
_GAP_IN = 0.06
_LABEL_IN = 2.0  # left margin: the row's name and prediction
_BAR_IN = 0.95  # right margin: the colour bar and its label
_TITLE_IN, _HEAD_IN = 0.45, 0.3  # figure title, column headings
_WRAP = 22  # characters per line of a row name
OWN_COLOUR = "#f0a000"  # the frame of a row's own generator map


@dataclass(frozen=True)
class PanelStyle:
    """How a panel is drawn.

    Attributes:
        cell_in: side of one image in inches (1:1 at ``DPI``).
        stretch: columns whose map is stretched to its own min-max per image before drawing,
            with the range printed in the cell (the decoder: its sigmoid output often spans a
            few hundredths, a flat wash on the 0-1 scale).
    """

    cell_in: float = _CELL_IN
    stretch: frozenset[str] = frozenset({"decoder"})


@dataclass(frozen=True)
class PanelRow:
    """One row of a panel: a model's maps of one image.

    Attributes:
        label: the row's name (an arm, a trial); may be empty.
        image: (S, S) grey image in [0, 1].
        maps: column key -> (S, S) map in [0, 1]; a missing key, None or a non-finite map is
            drawn as "n/a" (e.g. the decoder of an arm that trains none).
        probs: class probabilities in ``classes`` order, or None.
        true_label: the image's class id, when known (an exclusive task's).
        classes: the task's class names (``probs``' order).
        own: the column of the row's own generator map (framed, and named under the label).
    """

    label: str
    image: np.ndarray
    maps: Mapping[str, np.ndarray | None]
    probs: Sequence[float] | None = None
    true_label: int | None = None
    classes: Sequence[str] = ()
    own: str | None = None

    def __post_init__(self) -> None:
        if self.probs is not None and len(self.probs) != len(self.classes):
            raise ValueError(f"panel row {self.label!r}: {len(self.probs)} probabilities for classes {tuple(self.classes)}")  # fmt: skip


SHOWN_CLASSES = 4  # a row of more classes lists its 3 most probable, names cut to fit
_NAME_CHARS = 15


def prediction_lines(
    probs: Sequence[float], classes: Sequence[str], true_label: int | None = None
) -> list[str]:
    """``predicted: CHF``, ``correct`` / ``wrong`` (when the label is known), then
    ``p(Normal) 0.10`` ... (the predicted class is the argmax, ties to the lower class id, as in
    the DOCTOR analysis); of many classes, the ``SHOWN_CLASSES`` most probable."""
    probs = np.asarray(probs, dtype=np.float64)
    pred = int(np.argmax(probs))
    lines = [f"predicted: {classes[pred]}"]
    if true_label is not None and true_label >= 0:
        lines.append("correct" if pred == int(true_label) else "wrong")
    if len(classes) <= SHOWN_CLASSES:
        return lines + [f"p({c}) {p:.2f}" for c, p in zip(classes, probs, strict=True)]
    top = np.argsort(-probs, kind="stable")[: SHOWN_CLASSES - 1]
    return [f"predicted: {_cut(classes[pred])}"] + [
        f"{_cut(classes[c])} {probs[c]:.2f}" for c in top
    ]


def _cut(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "…"


def title_for(key: str, true_label: int | None, classes: Sequence[str] = ()) -> str:
    """``Test image <key>, true class CHF`` (the key alone without a known class)."""
    if true_label is None or true_label < 0 or not classes:
        return f"Test image {key}"
    return f"Test image {key}, true class {classes[int(true_label)]}"


def _draw_cell(ax, row: PanelRow, key: str, style: PanelStyle) -> None:
    ax.imshow(row.image, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
    heat = None if key == "image" else row.maps.get(key)
    if heat is not None and np.isfinite(heat).all():
        if key in style.stretch:
            lo, hi = float(np.min(heat)), float(np.max(heat))
            heat = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
            ax.text(0.5, 0.03, f"{lo:.2f}–{hi:.2f}", transform=ax.transAxes, ha="center",
                    va="bottom", color="w", fontsize=FONT_PT,
                    bbox={"facecolor": "k", "alpha": 0.6, "pad": 1})  # fmt: skip
        ax.imshow(
            heat,
            cmap=HEAT_CMAP,
            alpha=HEAT_ALPHA,
            norm=Normalize(0.0, 1.0),
            interpolation="bilinear",
        )
    elif key != "image":
        ax.text(0.5, 0.5, "n/a", transform=ax.transAxes, ha="center", va="center",
                color="w", fontsize=FONT_PT, bbox={"facecolor": "k", "alpha": 0.6})  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])
    if key == row.own:
        for spine in ax.spines.values():
            spine.set(edgecolor=OWN_COLOUR, linewidth=3)


def _row_text(row: PanelRow, titles: Mapping[str, str]) -> str:
    lines = textwrap.wrap(row.label, _WRAP) if row.label else []
    if row.own is not None:
        lines.append(f"own map: {titles.get(row.own, row.own)}")
    if row.probs is not None:
        lines += prediction_lines(row.probs, row.classes, row.true_label)
    return "\n".join(lines)


def panel_figure(
    rows: Sequence[PanelRow],
    columns: Sequence[str],
    title: str,
    *,
    titles: Mapping[str, str] | None = None,
    style: PanelStyle = PanelStyle(),
) -> Figure:
    """Draw ``rows`` x ``columns``: the image, with the column's map overlaid (key "image": none).

    Args:
        rows: one per model.
        columns: map keys, left to right (``ordered_columns`` gives the one order; ``map_title``
            names them, ``titles`` overrides).
        title: the figure's title.
        titles: column headings replacing ``map_title``'s.
        style: cell size, and the columns stretched per image (``PanelStyle``).

    Returns:
        The figure (save with :func:`save`).
    """
    if not rows or not columns:
        raise ValueError("a panel needs at least one row and one column")
    stretched = {
        k: f"{map_title(k).removesuffix(' map')} (stretched)" for k in columns if k in style.stretch
    }
    titles = {**{k: map_title(k) for k in columns}, **stretched, **(titles or {})}
    n_rows, n_cols, cell = len(rows), len(columns), style.cell_in
    width = _LABEL_IN + n_cols * cell + (n_cols - 1) * _GAP_IN + _BAR_IN
    grid_h = n_rows * cell + (n_rows - 1) * _GAP_IN
    height = _TITLE_IN + _HEAD_IN + grid_h + 0.1
    fig = Figure(figsize=(width, height), dpi=DPI)
    # Titles and row names carry image keys and file names: text, never mathtext ("$\\x$").
    fig.suptitle(title, fontsize=FONT_PT + 1, y=1 - 0.12 / height, va="top", parse_math=False)
    for i, row in enumerate(rows):
        top = height - _TITLE_IN - _HEAD_IN - i * (cell + _GAP_IN)
        for j, key in enumerate(columns):
            left = _LABEL_IN + j * (cell + _GAP_IN)
            ax = fig.add_axes((left / width, (top - cell) / height, cell / width, cell / height))
            _draw_cell(ax, row, key, style)
            if i == 0:
                ax.set_title(titles.get(key, key), fontsize=FONT_PT, parse_math=False)
        fig.text((_LABEL_IN - 0.08) / width, (top - cell / 2) / height, _row_text(row, titles),
                 ha="right", va="center", fontsize=FONT_PT, parse_math=False)  # fmt: skip
    bar_bottom = height - _TITLE_IN - _HEAD_IN - grid_h
    cax = fig.add_axes(
        ((width - _BAR_IN + 0.15) / width, bar_bottom / height, 0.14 / width, grid_h / height)
    )
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=HEAT_CMAP), cax=cax)
    bar.set_label("map value (0 low, 1 high)", fontsize=FONT_PT)
    bar.ax.tick_params(labelsize=FONT_PT)
    return fig


def layout_problems(fig: Figure) -> list[str]:
    """What would make ``fig`` hard to read when shown 1:1 at ``DPI``: wider than
    ``MAX_WIDTH_PX``, a text smaller than ``MIN_FONT_PX``, or a text cut off at the edge."""
    problems = []
    width = fig.get_figwidth() * DPI
    if width > MAX_WIDTH_PX:
        problems.append(f"figure is {width:.0f} px wide (> {MAX_WIDTH_PX})")
    canvas = FigureCanvasAgg(fig)
    fig.draw_without_rendering()  # creates the tick labels
    renderer = canvas.get_renderer()
    bounds = fig.bbox.padded(1.0)
    hidden = _undrawn_tick_labels(fig)
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip() or id(t) in hidden:
            continue
        px = t.get_fontsize() * DPI / 72.0
        if px < MIN_FONT_PX:
            problems.append(f"text {t.get_text()!r} is {px:.1f} px (< {MIN_FONT_PX})")
        extent = t.get_window_extent(renderer)
        inside = bounds.contains(extent.x0, extent.y0) and bounds.contains(extent.x1, extent.y1)
        if not inside:
            problems.append(f"text {t.get_text()!r} is cut off at the figure's edge")
    return problems


def _undrawn_tick_labels(fig: Figure) -> set[int]:
    """Ids of tick labels outside their axis' view interval (matplotlib keeps them, never draws
    them)."""
    out = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            pad = 1e-9 * max(1.0, abs(hi - lo))
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                if not lo - pad <= tick.get_loc() <= hi + pad:
                    out |= {id(tick.label1), id(tick.label2)}
    return out


def min_font_px(fig: Figure) -> float:
    """The smallest visible text of ``fig`` in pixels at ``DPI``."""
    sizes = [
        t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
    ]
    return min(sizes, default=0.0) * DPI / 72.0


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``DPI``.

    The PNG's text chunks record its smallest text (``min_font_px``) and what breaks the
    readability rules (``layout_problems``, empty when none; see :func:`layout_problems`); the
    report's tests read them back. A problem is logged, not raised: a figure must never cost a
    finished trial its results.
    """
    problems = "; ".join(layout_problems(fig))
    if problems:
        log.warning("%s: %s", path.name, problems)
    metadata = {"min_font_px": f"{min_font_px(fig):.1f}", "layout_problems": problems}
    fig.savefig(path, dpi=DPI, metadata=metadata)
    return path


def write_panels(
    arrays: dict[str, np.ndarray],
    generator: str,
    out_dir: Path,
    classes: Sequence[str],
    own_generator: bool = True,
) -> list[Path]:
    """One PNG per image of a trial's ``heatmaps/maps.npz`` arrays (``<key>.png`` in ``out_dir``):
    input, gaze map, the arm's generator map (framed when ``own_generator``: the arm trains with
    it; GBP is shown for arms that train with none) and its decoder map (stretched), in the one
    column order (``ordered_columns``). A key that is not a plain file
    name in ``out_dir`` (``keys.safe_child``) is skipped with a warning: a figure must never cost
    a finished trial its results, nor write outside its folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = ordered_columns(("image", "gaze", generator, "decoder"))
    own = generator if own_generator else None
    # The arm's own map is stored as "generator" (maps.npz keeps gbp / deconv / gradcam of every
    # arm too); older files without it have it under the generator's name.
    array_of = {generator: "generator"} if "generator" in arrays else {}
    paths = []
    for i, key in enumerate(arrays.get("keys", [])):
        label = int(arrays["labels"][i])
        row = PanelRow(
            label="",
            image=arrays["image"][i],
            maps={
                k: arrays[array_of.get(k, k)][i]
                for k in columns[1:]
                if array_of.get(k, k) in arrays
            },
            probs=arrays["probs"][i],
            true_label=label,
            classes=classes,
            own=own,
        )
        try:
            path = safe_child(out_dir, f"{key}.png")
        except UnsafeName as err:
            log.warning("heatmap panel skipped: %s", err)
            continue
        paths.append(save(panel_figure([row], columns, title_for(key, label, classes)), path))
    return paths
