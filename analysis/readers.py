"""Maps judged by several radiologists and by their ellipses (REFLACX-like datasets).

Two report sections, from per-image values the record holds (``study/ceiling.csv`` on the parent
run, ``explain/readers.csv`` on every trial; ``trainables.reader_eval``):

- **Agreement with the radiologists.** The human ceiling (each reader's map against the mean of the
  others, on the test images read by several radiologists) beside every arm's generator and
  decoder maps scored against the same readers of the same images: CC, KL, NSS, AUC-Judd and
  shuffled AUC, each a mean with its bootstrap 95% interval. A map *agrees with the radiologists*
  when its mean CC reaches ``AGREE_SHARE`` of the ceiling's: the share and its interval come
  from the same resamples of the images (paired), and the verdict is "yes" only when the whole
  interval is at or above the share, "no" when it is below, "undetermined" otherwise.
- **Expert localization** (no gaze involved): the pointing game (is the map's maximum inside an
  ellipse of a present finding?) and the share of the map's energy inside the ellipses, on the
  test images with at least one such ellipse; each arm's maps with intervals and the paired
  difference against the baseline's map of the same kind.

The resamples and seed are the study's (``Study.bootstrap``), as for the AUCs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.paper import ARM_LABELS, BASELINE
from trainables.agreement import AGREEMENT_KEYS
from trainables.metrics import bootstrap_indices, percentile_summary
from trainables.per_image import paired_difference, summarise
from trainables.record.reader import Record, Study
from trainables.record.trial import Trial

AGREE_SHARE = 0.8  # a map agrees with the radiologists at 80% of their own CC with each other
AGREE_METRIC = "cc"
CEILING_ROW = "human ceiling (leave one reader out)"
METRIC_NAMES = {"cc": "CC ↑", "kl": "KL ↓", "nss": "NSS ↑", "auc_judd": "AUC-Judd ↑", "sauc": "sAUC ↑"}  # fmt: skip
LOCALIZATION_NAMES = {"pointing": "pointing game ↑", "energy": "energy inside ↑"}
MAP_KINDS = ("generator", "decoder")
NO_CEILING = (
    "No test image was read by several radiologists, so there is no human ceiling to compare "
    "with (REFLACX has 109 such images, 4% of its 2,616; a larger test split holds more)."
)


def _interval(values: np.ndarray, resamples: int, seed: int) -> str:
    s = summarise({"v": values}, resamples=resamples, seed=seed)["v"]
    return "n/a" if s.n == 0 else f"{s.mean:.3f} ({s.low:.3f}, {s.high:.3f})"


def share_of_ceiling(
    model: np.ndarray, ceiling: np.ndarray, *, resamples: int, seed: int, alpha: float = 0.05
) -> tuple[float, float, float]:
    """``mean(model) / mean(ceiling)`` over the images where both are finite, and its percentile
    interval over paired resamples of those images (nan when the ceiling's mean is not > 0)."""
    model, ceiling = np.asarray(model, float), np.asarray(ceiling, float)
    both = np.isfinite(model) & np.isfinite(ceiling)
    m, c = model[both], ceiling[both]
    if not len(m) or c.mean() <= 0:
        return (np.nan, np.nan, np.nan)
    idx = bootstrap_indices(len(m), resamples=resamples, seed=seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = m[idx].mean(1) / c[idx].mean(1)
    ratios = np.where(c[idx].mean(1) > 0, ratios, np.nan)
    _, low, high = percentile_summary(ratios, alpha)
    return float(m.mean() / c.mean()), low, high


def agreement_word(low: float, high: float, share: float = AGREE_SHARE) -> str:
    """ "yes" when the whole interval of the share of the ceiling is at or above ``share``."""
    if not np.isfinite(low + high):
        return "n/a"
    return "yes" if low >= share else "no" if high < share else "undetermined"


@dataclass(frozen=True)
class ReadersOutput:
    """What write_readers_from built and wrote: display frames and the files."""

    agreement: pd.DataFrame  # rows: the ceiling, then arm x map kind
    localization: pd.DataFrame  # rows: arm x map kind
    n_multi: int  # test images read by several radiologists
    n_ellipses: int  # test images with an ellipse of a present finding
    files: list[Path]


def _maps(frame: pd.DataFrame, kind: str) -> pd.DataFrame | None:
    part = frame[frame["map"] == kind]
    return None if part.empty or part[list(AGREEMENT_KEYS)].isna().all().all() else part.set_index("key")  # fmt: skip


def agreement_frame(
    ceiling: pd.DataFrame, runs: dict[str, pd.DataFrame], *, resamples: int, seed: int
) -> pd.DataFrame:
    """The ceiling row, then one row per arm and map kind on the ceiling's images."""
    keys = ceiling["key"].tolist()
    ceil = ceiling.set_index("key").loc[keys]
    rows = [{"Map": CEILING_ROW, **{METRIC_NAMES[k]: _interval(ceil[k].to_numpy(), resamples, seed) for k in AGREEMENT_KEYS}, "share of ceiling CC": "1", "agrees": "—"}]  # fmt: skip
    for arm, frame in runs.items():
        for kind in MAP_KINDS:
            part = _maps(frame, kind)
            if part is None:
                continue
            part = part.reindex(keys)
            gen = part["generator"].dropna().iloc[0] if part["generator"].notna().any() else ""
            row = {"Map": f"{ARM_LABELS.get(arm, arm)}: {kind}{f' ({gen})' if kind == 'generator' else ''}"}  # fmt: skip
            row |= {METRIC_NAMES[k]: _interval(part[k].to_numpy(), resamples, seed) for k in AGREEMENT_KEYS}  # fmt: skip
            share, low, high = share_of_ceiling(part[AGREE_METRIC].to_numpy(), ceil[AGREE_METRIC].to_numpy(), resamples=resamples, seed=seed)  # fmt: skip
            row["share of ceiling CC"] = "n/a" if not np.isfinite(share) else f"{share:.2f} ({low:.2f}, {high:.2f})"  # fmt: skip
            row["agrees"] = agreement_word(low, high)
            rows.append(row)
    return pd.DataFrame(rows).set_index("Map")


def localization_frame(
    runs: dict[str, pd.DataFrame], baseline: str, *, resamples: int, seed: int
) -> tuple[pd.DataFrame, int]:
    """Pointing game and energy inside the ellipses per arm and map kind, with the paired
    difference against the baseline's map of the same kind; and the images it counts."""
    rows, counted = [], 0
    base = runs.get(baseline)
    for arm, frame in runs.items():
        for kind in MAP_KINDS:
            part = frame[frame["map"] == kind].set_index("key").sort_index()
            if part.empty or part["pointing"].isna().all():
                continue
            counted = max(counted, int(part["pointing"].notna().sum()))
            row = {"Map": f"{ARM_LABELS.get(arm, arm)}: {kind}"}
            ref = None if base is None or arm == baseline else base[base["map"] == kind].set_index("key").reindex(part.index)  # fmt: skip
            for key, name in LOCALIZATION_NAMES.items():
                row[name] = _interval(part[key].to_numpy(), resamples, seed)
                if ref is None or ref[key].isna().all():
                    row[f"{name} − {baseline}"] = "reference" if arm == baseline else "n/a"
                    continue
                d = paired_difference(part[key].to_numpy(), ref[key].to_numpy(), resamples=resamples, seed=seed)  # fmt: skip
                row[f"{name} − {baseline}"] = f"{d.mean:+.3f} ({d.low:+.3f}, {d.high:+.3f})"
            rows.append(row)
    return (pd.DataFrame(rows).set_index("Map") if rows else pd.DataFrame()), counted


def write_readers_from(
    record: Record, study: Study, best: dict[str, Trial | None], out_dir: Path,
    baseline: str = BASELINE,
) -> ReadersOutput | None:  # fmt: skip
    """The two tables for the study's best trials, written as ``readers_agreement.csv`` and
    ``readers_localization.csv``; None for a study without readers (a single-reader dataset)."""
    ceiling = record.ceiling(study.parent_run_id)
    runs = {arm: f for arm, t in best.items() if t is not None and (f := record.readers(t.run_id)) is not None}  # fmt: skip
    if ceiling is None and not runs:
        return None
    boot = study.bootstrap
    agreement = (
        agreement_frame(ceiling, runs, resamples=boot.resamples, seed=boot.seed)
        if ceiling is not None and len(ceiling)
        else pd.DataFrame()
    )
    located, n_ellipses = localization_frame(runs, baseline, resamples=boot.resamples, seed=boot.seed)  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "readers_agreement.csv", out_dir / "readers_localization.csv"]
    agreement.to_csv(files[0])
    located.to_csv(files[1])
    n_multi = 0 if ceiling is None else len(ceiling)
    return ReadersOutput(agreement, located, n_multi, n_ellipses, files)


def agreement_note(out: ReadersOutput, resamples: int) -> str:
    return (
        f"{out.n_multi} test images read by several radiologists. Human ceiling: each reader's map "
        "against the mean of the other readers' maps of the image (leave one reader out), averaged "
        "over readers; every arm's maps are scored against the same readers of the same images "
        "(the mean over readers of the map against each). sAUC: shuffled AUC, whose negatives are "
        "fixations on other images (it discounts centre bias). Each cell: the mean over images "
        f"with its 95% bootstrap interval ({resamples} resamples). A map agrees with the "
        f"radiologists when its mean CC reaches {AGREE_SHARE:.0%} of the ceiling's: 'yes' when the "
        "whole interval of that share (paired resamples) is at or above it, 'no' when below, "
        "'undetermined' when it spans it."
    )


def localization_note(out: ReadersOutput, baseline: str = BASELINE) -> str:
    return (
        f"{out.n_ellipses} test images with an expert ellipse of a present finding (the "
        "radiologists' own boxes; gaze plays no part). Pointing game: share of images whose map "
        "maximum lies inside an ellipse; energy inside: the share of the map's mass inside them "
        "(a uniform map scores the ellipses' area). Means with 95% bootstrap intervals, and the "
        f"paired difference against {baseline}'s map of the same kind on the same images."
    )


def readers_sections(out: ReadersOutput | None, resamples: int) -> Sequence[tuple[str, pd.DataFrame, str]]:  # fmt: skip
    """(title, table, note) of each section to show; empty for a study without readers."""
    if out is None:
        return ()
    parts = []
    title = "Agreement with the radiologists (human ceiling)"
    if not out.agreement.empty:
        parts.append((title, out.agreement, agreement_note(out, resamples)))
    else:
        parts.append((title, pd.DataFrame(), NO_CEILING))
    if not out.localization.empty:
        parts.append(("Expert localization: the radiologists' ellipses", out.localization, localization_note(out)))  # fmt: skip
    return parts
