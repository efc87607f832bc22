"""Bad-input bookkeeping shared by every loader: report, skip, count, go on."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("seqify.data")


@dataclass
class BadRow:
    """One skipped input row: where it was and why it was skipped."""

    source: str
    row: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: row {self.row}: {self.reason}"


@dataclass
class RowReport:
    """Collects skipped rows while a loader goes on with the rest.

    ``add`` logs a warning for each of the first ``log_first`` bad rows (then one line
    saying the rest are counted) and keeps every row in ``bad``; ``summary`` gives the
    counts that end up in ``results.json``.
    """

    log_first: int = 20
    bad: list[BadRow] = field(default_factory=list)
    read: int = 0

    def add(self, source: str, row: int, reason: str) -> None:
        entry = BadRow(source, row, reason)
        self.bad.append(entry)
        if len(self.bad) <= self.log_first:
            log.warning("skipped %s", entry)
        elif len(self.bad) == self.log_first + 1 and self.log_first > 0:
            log.warning("more bad rows: counting them without printing each")

    def seen(self, n: int = 1) -> None:
        """Count rows read (good or bad)."""
        self.read += n

    @property
    def skipped(self) -> int:
        return len(self.bad)

    def summary(self, show: int = 20) -> dict:
        reasons: dict[str, int] = {}
        for b in self.bad:
            key = b.reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        return {
            "rows_read": self.read,
            "rows_skipped": self.skipped,
            "skipped_by_reason": reasons,
            "first_skipped": [str(b) for b in self.bad[:show]],
        }
