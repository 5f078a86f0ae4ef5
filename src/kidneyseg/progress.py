"""Progress of one case: a log line per stage and, on a terminal, a bar over the stages.

Cohorts of two or more cases get a bar over the cases (:mod:`kidneyseg.cohort`); a single
volume, which takes seconds to minutes, reports its stages instead. Stage lines go to the
``kidneyseg.stages`` logger, which the command line shows with ``--verbose`` (terminal or
not, e.g. in a cluster job's log); the bar is tqdm's, shown only on a terminal.
"""

from __future__ import annotations

import logging
import time

from tqdm import tqdm

STAGE_LOGGER = "kidneyseg.stages"
STAGES = ("read", "load model", "segment", "write")
"""The stages of a volume, in order (``load model`` only for the first case of a run)."""

log = logging.getLogger(STAGE_LOGGER)


class CaseProgress:
    """Stage reporting for one case; use as a context manager.

    Args:
        case: the case name, the prefix of every line.
        bar: show a tqdm bar over :data:`STAGES` (tqdm turns it off when stderr is not a
            terminal, and it is not shown while stage lines are logged).
    """

    def __init__(self, case: str, bar: bool = False):
        self.case = case
        self.seconds: dict[str, float] = {}
        self._current: str | None = None
        self._t0 = self._start = time.perf_counter()
        show = bar and not log.isEnabledFor(logging.INFO)
        self._bar = tqdm(total=len(STAGES), desc=case, unit="stage", leave=False, disable=None if show else True,
                         bar_format="{desc}: {n}/{total} stages |{bar}| {elapsed}")

    def stage(self, name: str, detail: str = "") -> None:
        """Start stage ``name`` (one of :data:`STAGES`), ending the previous one."""
        self._end()
        self._current = name
        self._bar.set_description_str(f"{self.case}: {name}")
        log.info("%s: %s%s", self.case, name, f" ({detail})" if detail else "")

    def _end(self) -> None:
        now = time.perf_counter()
        if self._current is not None:
            self.seconds[self._current] = self.seconds.get(self._current, 0.0) + now - self._t0
            self._bar.update(1)
        self._t0 = now
        self._current = None

    def __enter__(self) -> "CaseProgress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        failed = exc_type is not None
        self._end()
        self._bar.close()
        total = time.perf_counter() - self._start
        parts = ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items())
        log.info("%s: %s in %.1f s (%s)", self.case, "stopped" if failed else "done", total, parts)
