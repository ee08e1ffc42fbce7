"""The study's console progress: one line per finished trial and a live ``[arm k/N]`` line with an ETA.

``ProgressBoard`` holds the counts and the arithmetic (no Ray; unit-tested with a fake clock);
``TuneProgress`` is the Tune callback that feeds it. Counts are kept per arm, so trials of several
arms may interleave (arms sharing the cluster); the ETA comes from the durations of finished trials.
On a terminal the live line is redrawn in place; in a log (pipe, CI) each trial line carries the
progress instead, so a study prints one line per trial either way.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ray import tune

from trainables.record import EPOCH, SEARCH_METRIC, SELECTION_METRIC, Stage
from trainables.trainable import TUNE_DIVERGED

# What a finished trial's line says (the MLflow ``status`` tags are ok / stopped / diverged / failed).
OK, STOPPED, DIVERGED_TEXT, FAILED = "ok", "stopped early", "diverged", "failed"
_REDRAW_S = 1.0  # the live line is redrawn at most this often
_ERROR_CHARS = 100  # a failed trial's line shows the end of its error, this long at most


def format_duration(seconds: float) -> str:
    """``45s``, ``4m 10s``, ``1h 05m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def eta_seconds(
    durations: Sequence[float], running_elapsed: Sequence[float], pending: int, slots: int
) -> float | None:
    """Seconds until every trial has finished, or None before any trial has.

    Each trial is expected to take the mean duration of the finished ones; a running trial has
    that minus its elapsed time left (never less than 0). The work left is shared by ``slots``
    trials running at once.

    Args:
        durations: wall seconds of the finished trials.
        running_elapsed: seconds each running trial has run so far.
        pending: trials not started yet.
        slots: trials that run at the same time (at least 1 is assumed).
    """
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    left = pending * mean + sum(max(0.0, mean - e) for e in running_elapsed)
    return left / max(1, slots)


def trial_status(last_result: dict[str, Any] | None, *, errored: bool) -> str:
    """``ok``, ``stopped early`` (ASHA), ``diverged`` or ``failed``, from a trial's last report.

    A trial that ran to its end reported its best epoch (``SELECTION_METRIC``). Tune's own ``done``
    key is no help: Tune sets it on the last result of a trial that ASHA stops, too.
    """
    if errored:
        return FAILED
    last = last_result or {}
    if last.get(TUNE_DIVERGED):
        return DIVERGED_TEXT
    return OK if SELECTION_METRIC in last else STOPPED


class Outcome(NamedTuple):
    """How a trial ended, as far as its line tells: epochs run, best validation AUC (None: from
    its reports), its stage, and the error of a failed one."""

    epochs: int | None = None
    val_auc: float | None = None
    stage: str = ""
    error: str | None = None


@dataclass
class _Running:
    arm: str
    started: float
    best_val: float = math.nan  # best val/auc_mean reported so far
    epochs: int = 0


class ProgressBoard:
    """Counts per arm, durations, the per-trial lines and the live line of one study."""

    def __init__(
        self,
        arms: Sequence[str],
        trials_per_arm: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[str], None] | None = None,
        live: bool | None = None,
    ) -> None:
        """
        Args:
            arms: the study's arms, in order (``[arm k/N]`` is the position in this list).
            trials_per_arm: trials expected per arm (``expect`` adds more, e.g. a seeds stage).
            clock: seconds, monotonic (tests pass a fake one).
            write: where text goes (default: sys.stdout at the time of writing).
            live: redraw a live line in place; default: when stdout is a terminal.
        """
        self.arms = list(arms)
        self.expected = Counter({a: trials_per_arm for a in self.arms})
        self.done: Counter[str] = Counter()
        self.durations: list[float] = []
        self.running: dict[str, _Running] = {}
        self.max_running = 0
        self._clock = clock
        self._write = write
        self._live = live
        self._live_shown = False
        self._last_draw = -math.inf

    # -- events --------------------------------------------------------------------------------
    def expect(self, arm: str, trials: int) -> None:
        """``trials`` more trials of ``arm`` will run (a later stage)."""
        if arm not in self.arms:
            self.arms.append(arm)
        self.expected[arm] += trials

    def start(self, trial_id: str, arm: str) -> None:
        if trial_id in self.running:  # restarted after a failure: keep its first start
            return
        self.running[trial_id] = _Running(arm, self._clock())
        self.max_running = max(self.max_running, len(self.running))
        self.redraw(force=True)

    def report(self, trial_id: str, epoch: int, val_auc: float | None) -> None:
        run = self.running.get(trial_id)
        if run is None:
            return
        run.epochs = max(run.epochs, epoch)
        if val_auc is not None and math.isfinite(val_auc):
            run.best_val = val_auc if math.isnan(run.best_val) else max(run.best_val, val_auc)

    def finish(self, trial_id: str, arm: str, status: str, end: Outcome | None = None) -> str:
        """Count a finished trial and print its line; returns the line."""
        epochs, val_auc, stage, error = end or Outcome()
        run = self.running.pop(trial_id, None) or _Running(arm, self._clock())
        self.durations.append(self._clock() - run.started)
        self.done[arm] += 1
        epochs = run.epochs if epochs is None else epochs
        val = run.best_val if val_auc is None or not math.isfinite(val_auc) else val_auc
        shown = "-" if status in (FAILED, DIVERGED_TEXT) or math.isnan(val) else f"{val:.3f}"
        parts = [
            f"{self.arm_tag(arm)} {arm:<12}",
            f"trial {self.done[arm]}/{self.expected[arm]}{' ' + stage if stage else ''}",
            f"{epochs} epoch{'' if epochs == 1 else 's'}".ljust(9),
            f"val AUC {shown:<5}",
            f"{status:<13}",
        ]
        if not self.live:
            parts.append(f"| {self.totals()}")
        if error:
            parts.append(f"({_short(error)})")
        line = "  ".join(parts).rstrip()
        self._print(line)
        return line

    def finished_before(self, arm: str) -> None:
        """A trial that ended in an earlier run of this study (``--resume``): counted, no line."""
        self.done[arm] += 1

    # -- views ---------------------------------------------------------------------------------
    def arm_tag(self, arm: str) -> str:
        return f"[arm {self.arms.index(arm) + 1}/{len(self.arms)}]" if arm in self.arms else "[arm]"

    def eta(self) -> float | None:
        now = self._clock()
        total = sum(self.expected.values())
        pending = max(0, total - sum(self.done.values()) - len(self.running))
        return eta_seconds(
            self.durations,
            [now - r.started for r in self.running.values()],
            pending,
            max(1, self.max_running),
        )

    def totals(self) -> str:
        """``5/16 trials done, ETA 2m 10s``."""
        done, total = sum(self.done.values()), sum(self.expected.values())
        eta = self.eta()
        return f"{done}/{total} trials done, ETA " + ("?" if eta is None else format_duration(eta))

    def status_line(self) -> str:
        """The live line: each arm with a running trial (``[arm k/N] arm done/total``), totals."""
        arms = sorted({r.arm for r in self.running.values()}, key=self._order)
        running = ", ".join(
            f"{self.arm_tag(a)} {a} {self.done[a]}/{self.expected[a]}" for a in arms
        )
        return f"{running or '[study]'}  | {self.totals()}"

    @property
    def live(self) -> bool:
        if self._live is None:
            return sys.stdout.isatty()
        return self._live

    def redraw(self, *, force: bool = False) -> None:
        """Redraw the live line (terminal only; at most once a second unless forced)."""
        now = self._clock()
        if not self.live or (not force and now - self._last_draw < _REDRAW_S):
            return
        self._last_draw = now
        self._emit("\r\x1b[K" + self.status_line())
        self._live_shown = True

    def clear(self) -> None:
        """Remove the live line (before other output, e.g. the final table)."""
        if self._live_shown:
            self._emit("\r\x1b[K")
            self._live_shown = False

    def _print(self, line: str) -> None:
        self.clear()
        self._emit(line + "\n")
        self.redraw(force=True)

    def _emit(self, text: str) -> None:
        write = self._write or sys.stdout.write
        write(text)
        if self._write is None:
            sys.stdout.flush()

    def _order(self, arm: str) -> int:
        return self.arms.index(arm) if arm in self.arms else len(self.arms)


def _short(error: str) -> str:
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else ""
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."


def _error_text(trial: Any) -> str:
    # Tune writes the error file in the trial's local folder first and uploads it later.
    try:
        with open(trial.error_file) as f:
            return f.read()
    except (OSError, TypeError):
        pass
    try:
        return str(trial.get_error() or "") or "no error recorded"
    except OSError:  # storage unreachable: the line still says "failed"
        return "no error recorded"


# Live boards by study name. Tune pickles a Tuner's callbacks into its experiment folder and a
# restored Tuner uses the unpickled copies; TuneProgress pickles as a reference to the board of
# its study, so a resumed study reports into the board of the process that resumes it.
_BOARDS: dict[str, ProgressBoard] = {}


def _board_callback(key: str) -> TuneProgress:
    board = _BOARDS.get(key)
    if board is None:  # unpickled where no study of that name runs: report nothing
        return TuneProgress(key, ProgressBoard([], 0, live=False, write=lambda _: None), False)
    return TuneProgress(key, board)


class TuneProgress(tune.Callback):
    """Feeds Tune's trial events to a ProgressBoard (one instance for all Tuners of a study)."""

    def __init__(self, key: str, board: ProgressBoard, register: bool = True) -> None:
        """``key`` names the study; the newest board registered for it is the live one."""
        self.key, self.board = key, board
        if register:
            _BOARDS[key] = board
        self._seen: set[str] = set()

    def __reduce__(self):
        return (_board_callback, (self.key,))

    @staticmethod
    def _arm(trial: Any) -> str:
        return str((trial.config or {}).get("arm", "?"))

    @staticmethod
    def _stage(trial: Any) -> str:
        name = str(getattr(trial, "experiment_dir_name", "") or "")
        return Stage.SEEDS.value if name == Stage.SEEDS else ""

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        for trial in trials:  # trials restored as ended (--resume) count as done, once
            if trial.trial_id not in self._seen and trial.status in ("TERMINATED", "ERROR"):
                self._seen.add(trial.trial_id)
                self.board.finished_before(self._arm(trial))
        self.board.redraw()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._seen.add(trial.trial_id)
        self.board.start(trial.trial_id, self._arm(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        epoch = int(result.get(EPOCH, result.get("training_iteration", 0)) or 0)
        val = result.get(SEARCH_METRIC)
        self.board.report(trial.trial_id, epoch, None if result.get(TUNE_DIVERGED) else val)

    def _finish(self, trial: Any, *, errored: bool) -> None:
        self._seen.add(trial.trial_id)
        last = trial.last_result or {}
        status = trial_status(last, errored=errored)
        epoch = last.get(EPOCH, last.get("training_iteration"))
        error = _error_text(trial) if errored else None
        end = Outcome(None if epoch is None else int(epoch), last.get(SELECTION_METRIC), self._stage(trial), error)  # fmt: skip
        self.board.finish(trial.trial_id, self._arm(trial), status, end)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, errored=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.board.clear()
