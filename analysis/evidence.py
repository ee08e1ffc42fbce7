"""The evidence experiment's analysis: does an arm resist a shortcut, and does its map follow gaze?

``python -m analysis.evidence --tracking-uri URI --experiment gaze-unet-evidence [--parent RUN]``

Reads the trials of one evidence run (``study.evidence``: every arm x seeds x {clean, shortcut}
twins, runs tagged ``stage=evidence`` and ``twin``) and writes ``evidence.md`` / ``.csv``, three
figures and a self-contained ``evidence.html``. Per arm:

- test mean AUC on the clean and on the shortcut twin (mean over seeds, 95% t-interval);
- the AUC the shortcut costs, clean - shortcut, paired by seed;
- the paired difference against ``unet`` on the shortcut twin, and the share of ``unet``'s loss
  it recovers, ``(AUC_arm - AUC_unet) / (AUC_unet,clean - AUC_unet,shortcut)`` (from the means);
- map-vs-gaze CC / NSS of the arm's own generator map and of its decoder map on the shortcut
  twin's test images, and the paired difference of the generator map's CC against the SAME
  generator's map on ``no-seg`` (the probe maps every trial logs), so maps are compared like for
  like.

Seeds pair the runs: seed s of every arm shares the data split and the batch order's seed. The CIs
are over seeds (``mean +- t_{0.975, n-1} * sd / sqrt(n)``), so they say how much the conclusion
depends on the training run, not on the test images.
"""

from __future__ import annotations

import base64
import html
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from analysis.formats import markdown_table
from trainables.record import (
    TAG_TWIN,
    Stage,
    Status,
    explain_metric,
    metric_key,
)
from trainables.record.reader import Record, Study
from trainables.record.trial import Trial

log = logging.getLogger(__name__)

BASELINE, MAP_BASELINE = "unet", "no-seg"
TWINS = ("clean", "shortcut")
AUC = metric_key("test", "auc_mean")


@dataclass(frozen=True)
class Interval:
    """Mean over seeds with a 95% t-interval (nan bounds for fewer than two values)."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Interval:
        v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
        if v.size == 0:
            return cls(math.nan, math.nan, math.nan, 0)
        mean = float(v.mean())
        if v.size < 2:
            return cls(mean, math.nan, math.nan, 1)
        half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
        return cls(mean, mean - half, mean + half, int(v.size))

    def excludes_zero(self) -> bool:
        return math.isfinite(self.low) and (self.low > 0 or self.high < 0)

    def text(self, signed: bool = False) -> str:
        if not math.isfinite(self.mean):
            return "n/a"
        fmt = "{:+.3f}" if signed else "{:.3f}"
        if not math.isfinite(self.low):
            return fmt.format(self.mean)
        return f"{fmt.format(self.mean)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"


def own_generator(arm: str) -> str:
    """The generator an arm's "generator" map is made with (``Arm.display_generator``)."""
    from trainables.model_sets import get_arm

    return get_arm(arm).display_generator


def _by_seed(trials: Sequence[Trial]) -> dict[tuple[str, str], dict[int, Trial]]:
    """(arm, twin) -> seed -> the finished trial."""
    out: dict[tuple[str, str], dict[int, Trial]] = {}
    for t in trials:
        if t.status != Status.OK or t.stage != Stage.EVIDENCE or AUC not in t.metrics:
            continue
        key = (t.arm, t.tags.get(TAG_TWIN, ""))
        seed = int(float(t.params.get("seed", "0")))
        if seed in out.setdefault(key, {}):
            log.warning("%s seed %d ran twice: keeping run %s", key, seed, t.run_id)
        out[key][seed] = t
    return out


def _paired(a: dict[int, float], b: dict[int, float]) -> Interval:
    seeds = sorted(set(a) & set(b))
    return Interval.of([a[s] - b[s] for s in seeds])


@dataclass
class EvidenceTable:
    """The numbers of the evidence experiment."""

    frame: pd.DataFrame  # one row per arm, numeric columns (for the CSV and the verdict)
    display: pd.DataFrame  # the same, formatted
    intervals: dict[tuple[str, str], Interval] = field(default_factory=dict)  # (arm, column)


def evidence_table(trials: Sequence[Trial], arms: Sequence[str]) -> EvidenceTable:
    """Compute the per-arm table (see the module docstring) from an evidence run's trials."""
    runs = _by_seed(trials)

    def metric(arm: str, twin: str, key: str) -> dict[int, float]:
        return {
            s: float(t.metrics.get(key, math.nan)) for s, t in runs.get((arm, twin), {}).items()
        }

    base_clean, base_sc = metric(BASELINE, "clean", AUC), metric(BASELINE, "shortcut", AUC)
    base_loss = Interval.of(base_clean.values()).mean - Interval.of(base_sc.values()).mean
    rows, shown, intervals = [], [], {}
    for arm in arms:
        clean, sc = metric(arm, "clean", AUC), metric(arm, "shortcut", AUC)
        gen = own_generator(arm)
        cells = {
            "clean AUC": Interval.of(clean.values()),
            "shortcut AUC": Interval.of(sc.values()),
            "AUC lost": _paired(clean, sc),
            "vs unet (shortcut)": _paired(sc, base_sc),
            "gen CC": Interval.of(
                metric(arm, "shortcut", explain_metric("generator", "cc")).values()
            ),
            "gen NSS": Interval.of(
                metric(arm, "shortcut", explain_metric("generator", "nss")).values()
            ),
            "dec CC": Interval.of(
                metric(arm, "shortcut", explain_metric("decoder", "cc")).values()
            ),
            "gen CC vs no-seg": _paired(
                metric(arm, "shortcut", explain_metric("generator", "cc")),
                metric(MAP_BASELINE, "shortcut", explain_metric("probe", "cc", gen)),
            ),
            "gen CC (clean)": Interval.of(
                metric(arm, "clean", explain_metric("generator", "cc")).values()
            ),
        }
        recovered = (
            cells["vs unet (shortcut)"].mean / base_loss
            if math.isfinite(base_loss) and base_loss > 0
            else math.nan
        )
        for col, iv in cells.items():
            intervals[(arm, col)] = iv
        row = {"arm": arm, "generator": gen, "seeds": min(len(clean), len(sc))}
        for col, iv in cells.items():
            row[col], row[f"{col} low"], row[f"{col} high"] = iv.mean, iv.low, iv.high
        row["unet loss recovered"] = recovered
        rows.append(row)
        signed = {"AUC lost", "vs unet (shortcut)", "gen CC vs no-seg"}
        shown.append(
            {
                "arm": arm,
                "map": gen,
                "seeds": row["seeds"],
                **{col: iv.text(signed=col in signed) for col, iv in cells.items()},
                "unet loss recovered": "n/a"
                if not math.isfinite(recovered)
                else f"{recovered:.0%}",
            }
        )
    return EvidenceTable(pd.DataFrame(rows), pd.DataFrame(shown).set_index("arm"), intervals)


def verdict(table: EvidenceTable) -> list[str]:
    """Plain sentences on what the numbers show (the goals of the experiment, checked)."""
    f = table.frame.set_index("arm")
    lines = []
    if BASELINE in f.index:
        b = f.loc[BASELINE]
        lines.append(
            f"unet: test mean AUC {b['clean AUC']:.3f} on the clean twin, {b['shortcut AUC']:.3f} "
            f"on the shortcut twin; the shortcut costs it {b['AUC lost']:+.3f} "
            f"(95% CI {b['AUC lost low']:+.3f} to {b['AUC lost high']:+.3f})."
        )
    resist = [
        a
        for a in f.index
        if a != BASELINE
        and table.intervals[(a, "vs unet (shortcut)")].excludes_zero()
        and f.loc[a, "vs unet (shortcut)"] > 0
    ]
    half = [a for a in resist if f.loc[a, "unet loss recovered"] >= 0.5]
    lines.append(
        "Arms better than unet on the shortcut twin (paired 95% CI over seeds above 0): "
        + (", ".join(f"{a} ({f.loc[a, 'unet loss recovered']:.0%} of unet's loss)" for a in resist)
           or "none")
        + "."
    )  # fmt: skip
    lines.append(
        "Of those, recovering at least half of what unet loses: "
        + (", ".join(half) or "none")
        + "."
    )
    worse = [
        a
        for a in f.index
        if a != BASELINE
        and table.intervals[(a, "vs unet (shortcut)")].excludes_zero()
        and f.loc[a, "vs unet (shortcut)"] < 0
    ]
    if worse:
        lines.append("Arms worse than unet on the shortcut twin: " + ", ".join(worse) + ".")
    maps = [
        a
        for a in f.index
        if a != MAP_BASELINE
        and table.intervals[(a, "gen CC vs no-seg")].excludes_zero()
        and f.loc[a, "gen CC vs no-seg"] > 0
    ]
    lines.append(
        "Arms whose own map agrees with gaze better than the same map of no-seg (paired CI > 0): "
        + (", ".join(maps) or "none")
        + "."
    )
    return lines


def _errorbars(ax, frame: pd.DataFrame, cols: Sequence[str], labels: Sequence[str], xlabel: str):
    arms = list(frame["arm"])
    y = np.arange(len(arms))
    offsets = np.linspace(-0.18, 0.18, len(cols))
    for col, label, dy in zip(cols, labels, offsets, strict=True):
        mean = frame[col].to_numpy(float)
        err = np.vstack([mean - frame[f"{col} low"], frame[f"{col} high"] - mean])
        ax.errorbar(mean, y + dy, xerr=np.nan_to_num(err), fmt="o", capsize=3, label=label)
    ax.set_yticks(y, arms, fontsize=10)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=9, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(cols))


def _figures(
    record: Record, trials: Sequence[Trial], table: EvidenceTable, out: Path
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    f = table.frame
    paths = []
    charts = {  # file: (columns, legend labels, x label)
        "evidence_auc.png": (["clean AUC", "shortcut AUC"], ["clean twin", "shortcut twin"],
                             "test mean AUC (mean over seeds, 95% CI)"),
        "evidence_maps.png": (["gen CC", "dec CC"], ["own generator map", "decoder map"],
                              "map-vs-gaze CC on the shortcut twin's test images (95% CI)"),
    }  # fmt: skip
    for name, (columns, labels, xlabel) in charts.items():
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(f) + 1.6))
        _errorbars(ax, f, columns, labels, xlabel)
        fig.tight_layout()
        paths.append(out / name)
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    panel = _panels(record, trials, list(f["arm"]), out / "evidence_panels.png")
    if panel:
        paths.append(panel)
    return paths


def _panels(
    record: Record, trials: Sequence[Trial], arms: Sequence[str], path: Path
) -> Path | None:
    """Shortcut-twin test images (rows: image + gaze, then each arm's own map), lowest seed."""
    runs = _by_seed(trials)
    chosen = {}
    for arm in arms:
        per_seed = runs.get((arm, "shortcut"), {})
        if per_seed:
            chosen[arm] = per_seed[min(per_seed)]
    maps = {}
    for arm, trial in chosen.items():
        try:
            maps[arm] = record.maps(trial.run_id)
        except (KeyError, ValueError, FileNotFoundError) as err:
            log.warning("no panels for %s (run %s): %s", arm, trial.run_id, err)
    if not maps:
        return None
    first = next(iter(maps.values()))
    k = min(3, len(first["keys"]))
    if k == 0:
        return None
    fig, axes = plt.subplots(k, len(maps) + 1, figsize=(1.9 * (len(maps) + 1), 2.0 * k + 0.4),
                             squeeze=False)  # fmt: skip
    for i in range(k):
        ax = axes[i, 0]
        ax.imshow(first["image"][i], cmap="gray", vmin=0, vmax=1)
        ax.imshow(first["gaze"][i], cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ax.set_title("image + gaze" if i == 0 else "", fontsize=10)
        for j, (arm, arrays) in enumerate(maps.items(), start=1):
            ax = axes[i, j]
            ax.imshow(arrays["image"][i], cmap="gray", vmin=0, vmax=1)
            own = arrays.get("generator", arrays["gbp"])
            ax.imshow(own[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            if i == 0:
                ax.set_title(arm, fontsize=10)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle("Shortcut twin, test images: each arm's own generator map (seed with lowest id)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


NOTE = (
    "Cells: mean over seeds [95% t-interval over seeds]. AUC lost = clean - shortcut, paired by "
    "seed. vs unet = arm - unet on the shortcut twin, paired by seed. unet loss recovered = (arm - "
    "unet) / (unet clean - unet shortcut), from the means. gen CC / NSS = the arm's own generator "
    "map (GBP for arms that train with none) against the gaze map on the shortcut twin's test "
    "images; dec CC = the decoder map (n/a for arms without a trained decoder). gen CC vs no-seg = "
    "the arm's map minus the same generator's map of no-seg, paired by seed. Hyperparameters are "
    "fixed (no search): validation carries the shortcut too."
)


@dataclass
class EvidenceOutput:
    markdown: str
    report: Path
    files: list[Path]
    table: EvidenceTable


def write_evidence_from(record: Record, study: Study, out_dir: Path) -> EvidenceOutput:
    """Write the evidence tables, figures and HTML page of ``study`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = [t for t in study.trials if t.stage == Stage.EVIDENCE]
    if not trials:
        raise KeyError(f"study run {study.parent_run_id} has no evidence trials (stage=evidence)")
    arms = list(study.arms)
    table = evidence_table(trials, arms)
    lines = verdict(table)
    md = (
        "## Evidence experiment: clean vs shortcut twin\n\n"
        + markdown_table(table.display)
        + "\n\n"
        + NOTE
        + "\n\n"
        + "\n".join(f"- {line}" for line in lines)
        + "\n"
    )
    (out_dir / "evidence.md").write_text(md)
    table.frame.to_csv(out_dir / "evidence.csv", index=False)
    figures = _figures(record, trials, table, out_dir)
    report = out_dir / "evidence.html"
    report.write_text(_html(study, table, lines, figures))
    return EvidenceOutput(md, report, [out_dir / "evidence.md", out_dir / "evidence.csv",
                                       *figures, report], table)  # fmt: skip


def _html(study: Study, table: EvidenceTable, lines: list[str], figures: list[Path]) -> str:
    settings = ", ".join(
        f"{k}={v}"
        for k, v in sorted(study.params.items())
        if k in ("shortcut", "shortcut_fraction", "shortcut_test", "seeds", "epochs",
                 "image_size", "images", "encoder", "lr")
    )  # fmt: skip
    imgs = "".join(
        f'<img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
        f'alt="{html.escape(p.stem)}">'
        for p in figures
    )
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Evidence experiment {html.escape(study.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:80em;color:#222}}
table{{border-collapse:collapse;font-size:0.85em}}th,td{{border:1px solid #bbb;padding:.25em .5em}}
th{{background:#eee}}p.note{{font-size:.85em;color:#555}}img{{max-width:100%;margin:.5em 0}}</style>
</head><body><h1>Evidence experiment: does gaze guidance resist a shortcut?</h1>
<p class="note">Study {html.escape(study.name)} (run {study.parent_run_id}); {html.escape(settings)};
written {now}.</p>
<h2>What the numbers show</h2><ul>{"".join(f"<li>{html.escape(x)}</li>" for x in lines)}</ul>
<h2>Per arm</h2>{table.display.reset_index().to_html(index=False, border=0)}
<p class="note">{html.escape(NOTE)}</p><h2>Figures</h2>{imgs}</body></html>
"""


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m analysis.evidence``: the evidence report of a study (``gaze-study report`` on an
    evidence study writes the same page)."""
    from analysis.cli import run_cli, write_and_log

    def write(tracking_uri, experiment, out_dir, *, parent=None, log_to_mlflow=False):
        return write_and_log(write_evidence_from, tracking_uri, experiment, out_dir, parent=parent, log_to_mlflow=log_to_mlflow)  # fmt: skip

    return run_cli(
        "python -m analysis.evidence",
        "Tables and figures of the evidence plan.",
        write,
        lambda out: out.markdown + "\nwrote " + ", ".join(str(f) for f in out.files),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
