"""Reader realism for the twin's simulated gaze: scanning fixations and thoroughness.

The default reading (``gaze.simulate_fixations``) surveys the chest and dwells on the findings; it
never looks at the film's corners or edges, which is exactly where the planted shortcuts sit. Real
readers do: a systematic search checks the whole film, labels and markers included. A
:class:`ReaderSpec` turns each default reading into a more realistic one:

1. **Thoroughness** ``t``: the reading holds ``round(t * n)`` fixations instead of ``n`` (a
   hastier reader stops after the first ones; a more thorough one goes on with more fixations of
   the same kind, from a second simulated reading), and every fixation lasts ``t`` times as long.
   The start times follow: the gaps between fixations are kept.
2. **Scanning share** ``s``: ``round(s * m)`` of the ``m`` fixations (never the first, which starts
   every reading in the centre of the screen) are moved to points drawn uniformly over the whole
   film, so scanning fixations fall in a region in proportion to its area: each corner box of
   side ``c`` (a share of the image side) receives a share ``c^2`` of them.

Every draw comes from a stream of its own per image, seeded from the twin's seed
(``numpy.random.default_rng([seed, 4, i])``), never from the twin's main stream, so with the
default spec (``s = 0``, ``t = 1``) nothing is drawn and the twin is byte-identical to one written
without this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainables.data.synthetic.cases import Case

READER_STREAM = 4  # default_rng([seed, READER_STREAM, i]): 1 main, 2 images, 3 shortcuts


@dataclass(frozen=True)
class ReaderSpec:
    """How the simulated radiologist reads, relative to the default reading."""

    scanning_share: float = 0.0  # share of each reading's fixations spread over the whole film
    thoroughness: float = 1.0  # fixations per reading, and each one's duration, times this

    def __post_init__(self) -> None:
        if not 0.0 <= self.scanning_share <= 1.0:
            raise ValueError(f"scanning share must be in [0, 1], got {self.scanning_share}")
        if not 0.1 <= self.thoroughness <= 10.0:
            raise ValueError(f"thoroughness must be in [0.1, 10], got {self.thoroughness}")

    def is_default(self) -> bool:
        return self.scanning_share == 0.0 and self.thoroughness == 1.0

    def tag(self) -> str:
        """A short name for folders, naming only what differs from the default: ``scan0.3``,
        ``thor2``, ``scan0.3-thor0.5``; empty for the default."""
        parts = []
        if self.scanning_share != 0.0:
            parts.append(f"scan{self.scanning_share:g}")
        if self.thoroughness != 1.0:
            parts.append(f"thor{self.thoroughness:g}")
        return "-".join(parts)


def add_reader_args(parser) -> None:
    """The twins' command-line options for a :class:`ReaderSpec` (``reader_from_args`` reads them)."""
    parser.add_argument(
        "--scanning-share", type=float, default=0.0,
        help="share of each reading's fixations spread over the whole film, corners included",
    )  # fmt: skip
    parser.add_argument(
        "--thoroughness", type=float, default=1.0,
        help="fixations per reading and their durations, times this",
    )  # fmt: skip


def reader_from_args(args) -> ReaderSpec:
    return ReaderSpec(args.scanning_share, args.thoroughness)


def reader_stream(seed: int, index: int) -> np.random.Generator:
    """Image ``index``'s reader stream in the twin of ``seed``."""
    return np.random.default_rng([seed, READER_STREAM, index])


def _gaps(fx: dict[str, np.ndarray]) -> np.ndarray:
    """Time before each fixation: the first one's latency, then the gap since the previous end."""
    ends = fx["start"][:-1] + fx["dur"][:-1]
    return np.concatenate([fx["start"][:1], fx["start"][1:] - ends])


def _longer(
    case: Case, fx: dict[str, np.ndarray], count: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """``fx`` followed by fixations of further simulated readings (each without its first,
    centred fixation) up to ``count`` fixations, with the gaps they were drawn with."""
    from trainables.data.synthetic.gaze import simulate_fixations  # gaze imports this module

    parts = [{**fx, "gap": _gaps(fx)}]
    have = len(fx["x"])
    while have < count:
        more = simulate_fixations(case, rng)
        more = {**more, "gap": _gaps(more)}
        parts.append({k: v[1 : 1 + count - have] for k, v in more.items()})
        have += len(parts[-1]["x"])
    return {k: np.concatenate([p[k] for p in parts]) for k in ("x", "y", "dur", "gap")}


def read_as(
    case: Case, fx: dict[str, np.ndarray], spec: ReaderSpec, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The default reading ``fx`` (``x``, ``y`` in native pixels, ``start``, ``dur`` in s) as the
    reader of ``spec`` reads the image (module docstring); ``fx`` itself for the default spec.

    Returns:
        The same keys, in viewing order.
    """
    if spec.is_default():
        return fx
    n = len(fx["x"])
    count = max(1, round(spec.thoroughness * n))
    if count <= n:
        out = {k: v[:count].copy() for k, v in fx.items()}
        out["gap"] = _gaps(fx)[:count]
    else:
        out = _longer(case, fx, count, rng)
    if spec.thoroughness != 1.0:
        out["dur"] = out["dur"] * spec.thoroughness
        before = np.concatenate([[0.0], np.cumsum(out["dur"])[:-1]])
        out["start"] = np.cumsum(out["gap"]) + before
    scanning = min(round(spec.scanning_share * count), count - 1)
    if scanning > 0:
        moved = 1 + rng.choice(count - 1, size=scanning, replace=False)
        out["x"], out["y"] = out["x"].copy(), out["y"].copy()
        out["x"][moved] = rng.uniform(0.0, case.width, scanning)
        out["y"][moved] = rng.uniform(0.0, case.height, scanning)
    return {k: out[k] for k in ("x", "y", "start", "dur")}
