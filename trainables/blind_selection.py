"""Model-selection signals that never read test labels, and the rule that picks a configuration.

On a shortcut twin the validation split carries the shortcut too, so validation AUC rewards the
shortcut (~0.99 for every arm that learned it) and selecting hyperparameters, epochs or arms by it
selects for the shortcut; the test split, where the shortcut breaks, must not be read either. Two
readings of the VALIDATION split can see a shortcut that lies where the radiologist did not look:

- ``val/masked_auc_mean`` (:func:`masked_auc`): mean AUC on validation images hidden outside the
  gaze (noise in place of every pixel below ``gaze_mask_threshold``, as the gaze-mask arm trains).
  A model that reads a shortcut outside the gaze loses AUC there; one that reads the findings
  keeps it, up to what the change of input costs a model never trained on masked images.
- ``val/gaze_agreement`` (:func:`gaze_agreement`): one minus the mean share of the log-probability
  input gradient's energy outside the gaze (the quantity rrr-share trains down). It reads no label
  at all. High: the model is sensitive where the radiologist looked.
- ``val/selection_score`` (:func:`combined`): ``0.5 + (masked AUC - 0.5) * agreement``: the
  masked AUC's margin over chance, discounted by the share of the model's sensitivity that lies
  outside the gaze. Equal to the masked AUC for a model whose sensitivity is all inside the gaze,
  chance (0.5) for one whose sensitivity is all outside. A heuristic, not a theorem: it asks the
  model both to classify from the looked-at content and to depend on it.

All three: higher is better, in [0, 1], from (model, device data, split, cfg). The masking is the
same for every configuration (noise, full strength, no dilation; only the shared
``gaze_mask_threshold`` comes from ``cfg``), so a gaze-mask trial searching ``mask_*`` is scored
like every other. Neither signal is a validated model-selection method: the evidence experiment
is what tells whether selecting by them avoids the shortcut.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from trainables.config import TrialConfig
from trainables.device_data import DeviceData
from trainables.evaluate import outside_energy_shares, predict_gaze_masked
from trainables.masking import MaskSpec
from trainables.metrics import per_class_auc
from trainables.model import MultiTaskUNet
from trainables.record.schema import BLIND_SIGNALS

MASKED_AUC, GAZE_AGREEMENT, SELECTION_SCORE = BLIND_SIGNALS  # their record keys (the schema's)
SIGNALS: tuple[str, ...] = BLIND_SIGNALS


def selection_mask(cfg: TrialConfig) -> MaskSpec:
    """The masking every configuration is scored with (module docstring)."""
    return MaskSpec(mode="noise", strength=1.0, dilation=0.0, threshold=cfg.gaze_mask_threshold)


def masked_auc(model: MultiTaskUNet, dd: DeviceData, split: str, cfg: TrialConfig) -> float:
    """Mean one-vs-rest AUC of ``split`` with its images hidden outside the gaze (nan when
    undefined, e.g. a class missing from the split)."""
    probs, labels = predict_gaze_masked(model, dd, split, selection_mask(cfg), cfg.eval_batch_size)
    if not len(labels):
        return math.nan
    return float(per_class_auc(labels, probs, dd.task)["auc_mean"])


def gaze_agreement(model: MultiTaskUNet, dd: DeviceData, split: str, cfg: TrialConfig) -> float:
    """One minus the mean outside-gaze energy share of the log-probability input gradient over
    the images of ``split`` whose gradient is not zero everywhere (nan if none). Reads no label."""
    shares = outside_energy_shares(model, dd, split, cfg.gaze_mask_threshold, cfg.eval_batch_size)
    shares = shares[np.isfinite(shares)]
    return float(1.0 - shares.mean()) if len(shares) else math.nan


def combined_score(masked: float, agreement: float) -> float:
    """``0.5 + (masked - 0.5) * agreement`` (module docstring); nan if either is."""
    return 0.5 + (masked - 0.5) * agreement


def combined(model: MultiTaskUNet, dd: DeviceData, split: str, cfg: TrialConfig) -> float:
    """:func:`combined_score` of :func:`masked_auc` and :func:`gaze_agreement`."""
    return combined_score(masked_auc(model, dd, split, cfg), gaze_agreement(model, dd, split, cfg))


def validation_signals(
    model: MultiTaskUNet, dd: DeviceData, cfg: TrialConfig, split: str = "val"
) -> dict[str, float]:
    """All three signals of one split, each computed once, under their record keys (``SIGNALS``;
    named ``val/...`` whatever ``split`` is, since selection reads validation)."""
    masked = masked_auc(model, dd, split, cfg)
    agreement = gaze_agreement(model, dd, split, cfg)
    return {
        MASKED_AUC: masked,
        GAZE_AGREEMENT: agreement,
        SELECTION_SCORE: combined_score(masked, agreement),
    }


@dataclass(frozen=True)
class Choice:
    """The configuration a selection rule picked, and how."""

    chosen: str
    score: float  # its value of the selection signal
    tied: tuple[str, ...]  # every configuration within the tolerance of the best, sorted
    rule: str  # the rule, in words (for reports)


def choose_configuration(
    signals: Mapping[str, Mapping[str, float]],
    key: str = SELECTION_SCORE,
    tiebreak: str | None = None,
    tolerance: float = 0.0,
) -> Choice:
    """Pick the configuration with the highest ``key`` among per-configuration validation signals.

    Ties: every configuration whose ``key`` lies within ``tolerance`` of the best is tied; among
    them the highest ``tiebreak`` signal wins (when given; a missing or nan one ranks last), then
    the first name in sorted order, so the choice never depends on the order of ``signals``.
    Configurations whose ``key`` is missing or not finite are never chosen.

    Args:
        signals: configuration name -> {signal name -> value} (e.g. :func:`validation_signals`).
        key: the signal to maximise.
        tiebreak: the signal that breaks ties (e.g. ``val/auc_mean``), or None.
        tolerance: values within this of the best count as tied (>= 0).

    Raises:
        ValueError: no configuration has a finite ``key``, or a negative tolerance.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    finite = {n: float(s[key]) for n, s in signals.items() if math.isfinite(s.get(key, math.nan))}
    if not finite:
        raise ValueError(f"no configuration has a finite {key!r} among {sorted(signals)}")
    best = max(finite.values())
    tied = sorted(n for n, v in finite.items() if v >= best - tolerance)

    def secondary(name: str) -> float:
        value = signals[name].get(tiebreak, math.nan) if tiebreak else math.nan
        return value if math.isfinite(value) else -math.inf

    chosen = min(tied, key=lambda n: (-secondary(n), n))
    rule = f"max {key}" + (f" (ties within {tolerance:g})" if tolerance else "")
    rule += f"; ties by max {tiebreak}, then by name" if tiebreak else "; ties by name"
    return Choice(chosen, finite[chosen], tuple(tied), rule)
