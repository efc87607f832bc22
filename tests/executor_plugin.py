"""A test plugin whose generator kills its own process mid-training (once), to test
that a matrix records a worker's death and resumes the cell on the next run.

The kill happens when the file named by ``SEQIFY_TEST_KILL_MARKER`` exists: at the
``SEQIFY_TEST_KILL_AFTER``-th training step the marker is removed and the process
sends itself SIGKILL (so the next run trains through)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from seqify.hookspecs import hookimpl
from seqify.testing import UnigramGenerator


class KillerGenerator(UnigramGenerator):
    """:class:`~seqify.testing.UnigramGenerator` that dies once, mid-training."""

    _steps = 0

    def loss(self, batch, order):
        KillerGenerator._steps += 1
        marker = os.environ.get("SEQIFY_TEST_KILL_MARKER")
        if marker and Path(marker).is_file() and KillerGenerator._steps >= int(os.environ.get("SEQIFY_TEST_KILL_AFTER", "15")):
            Path(marker).unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().loss(batch, order)


class KillerPlugin:
    @hookimpl
    def register_generators(self, register):
        register("killer", "tests.executor_plugin:KillerGenerator", "Dies once mid-training (test double).")
