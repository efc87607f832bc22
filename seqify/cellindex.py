"""The index of a matrix folder, ``DIR/index.sqlite``: one row per finished cell, and
the claims that keep two ``seqify matrix`` processes on one folder from running a cell
twice.

Only the driver writes it (workers return their results). A cell's row is written when
its outcome arrives, so a driver killed mid-matrix loses only the cells in flight; the
next run finds them unrecorded and runs them again (a cell killed mid-training resumes
from its ``train_state.pt``).

Claims: before a driver runs a cell it claims the cell's key in the ``claims`` table
(in one ``BEGIN IMMEDIATE`` transaction, so two drivers cannot both win). A claim names
its host, process id and that process's start time; a claim whose process is gone (the
same host, and no process with that id and start time) is stale and is taken over. A
claim from another host is trusted for ``STALE_AFTER_S`` (then taken over). SQLite's
locking needs a local file system or one with working POSIX locks (not every NFS).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from seqify.reports import GROUP, result_row

__all__ = ["SCHEMA", "CellIndex", "cell_key", "file_digest", "index_rows"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    modality TEXT, dataset TEXT, tokenizer TEXT, orderer TEXT, train_orderer TEXT, generator TEXT,
    budget TEXT, seed INTEGER,
    tokenizer_seed INTEGER, -- NULL: the tokenizer was fitted with the run seed (or loaded)
    status TEXT,            -- done | not_applicable | failed
    reason TEXT,
    results_json TEXT,
    out_dir TEXT,
    finished_at REAL
)
"""

CLAIMS = """
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,   -- a cell being run now
    owner TEXT,             -- host:pid:start of the driver running it
    host TEXT, pid INTEGER, started TEXT,
    claimed_at REAL
)
"""

#: a claim from another host is trusted this long (seconds) before it is taken over
STALE_AFTER_S = 24 * 3600


def cell_key(cell, budget: str, seed: int, tokenizer_seed: int | None = None,
              tokenizer_state: str | None = None) -> str:
    """Names, budget, seed and a hash of the fully resolved configuration: a changed
    setting makes a new cell (which may still reuse a shared trained model). A tokenizer
    seed and a digest of a loaded tokenizer state file are added only when given, so
    the cells of an older index keep their keys."""
    names = cell.names
    from seqify.config import key_dump

    resolved = json.dumps([key_dump(cell.config), key_dump(cell.generator_config)], sort_keys=True, default=str)
    parts = [names["modality"], names["dataset"], names["tokenizer"], names["orderer"], names["train_orderer"],
             names["generator"], budget, seed, hashlib.sha1(resolved.encode()).hexdigest()[:12]]
    if tokenizer_seed is not None:
        parts.append(f"tokenizer_seed={tokenizer_seed}")
    if tokenizer_state is not None:
        parts.append(f"tokenizer_state={tokenizer_state}")
    return json.dumps(parts)


def file_digest(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux: field 22 of /proc/PID/stat), so that a
    reused pid is not mistaken for the claim's owner; None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(host: str, pid: int, started: str | None) -> bool:
    if host != socket.gethostname():
        return True  # cannot tell from here: trusted until STALE_AFTER_S
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _process_start(pid)
    return started is None or now is None or now == started


class CellIndex:
    """``DIR/index.sqlite``: finished cells and the claims of running ones.

    Args:
        path: the index file (created, or given the columns and tables added since an
            older seqify wrote it).
    """

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.con = sqlite3.connect(path, timeout=60, isolation_level=None)  # transactions are explicit
        self.con.execute(SCHEMA)
        self.con.execute(CLAIMS)
        if "tokenizer_seed" not in {r[1] for r in self.con.execute("PRAGMA table_info(cells)")}:
            try:
                self.con.execute("ALTER TABLE cells ADD COLUMN tokenizer_seed INTEGER")
            except sqlite3.OperationalError as exc:  # another driver added it meanwhile
                if "duplicate column" not in str(exc):
                    raise
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.started = _process_start(self.pid)
        self.owner = f"{self.host}:{self.pid}:{self.started}"

    def close(self) -> None:
        try:
            self.release_all()
        finally:
            self.con.close()

    def release(self, keys: list[str]) -> None:
        """Drop this process's claims of ``keys`` (cells it will not run now)."""
        with self._transaction():
            self.con.executemany("DELETE FROM claims WHERE key = ? AND owner = ?", [(k, self.owner) for k in keys])

    def get(self, key: str) -> tuple | None:
        """``(status, reason, results_json, out_dir, finished_at)`` of a recorded cell."""
        return self.con.execute("SELECT status, reason, results_json, out_dir, finished_at FROM cells WHERE key = ?",
                                (key,)).fetchone()

    def record(self, key: str, names: dict[str, str], budget: str, seed: int, tokenizer_seed: int | None,
               status: str, reason: str | None, results: dict | None, out_dir: str) -> None:
        """Write a cell's outcome and drop its claim, in one transaction."""
        with self._transaction():
            self.con.execute(
                "INSERT OR REPLACE INTO cells (key, modality, dataset, tokenizer, orderer, train_orderer, generator, "
                "budget, seed, tokenizer_seed, status, reason, results_json, out_dir, finished_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, names["modality"], names["dataset"], names["tokenizer"], names["orderer"],
                 names["train_orderer"], names["generator"], budget, seed, tokenizer_seed, status, reason,
                 json.dumps(results) if results else None, out_dir, time.time()))
            self.con.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))

    def claim(self, keys: list[str], *, since: float) -> tuple[list[str], list[str], list[str]]:
        """Claim ``keys`` for this process.

        Returns ``(claimed, finished, busy)``: the keys this process may run now, those
        another process finished after ``since`` (this run takes their rows), and those
        another live process is running."""
        claimed, finished, busy = [], [], []
        with self._transaction():
            for key in keys:
                row = self.con.execute("SELECT status, finished_at FROM cells WHERE key = ?", (key,)).fetchone()
                if row is not None and row[1] is not None and row[1] > since:
                    finished.append(key)
                    continue
                c = self.con.execute("SELECT owner, host, pid, started, claimed_at FROM claims WHERE key = ?",
                                     (key,)).fetchone()
                if c is not None and c[0] != self.owner:
                    fresh = c[1] == self.host or time.time() - c[4] < STALE_AFTER_S
                    if fresh and _alive(c[1], c[2], c[3]):
                        busy.append(key)
                        continue
                self.con.execute("INSERT OR REPLACE INTO claims VALUES (?,?,?,?,?,?)",
                                 (key, self.owner, self.host, self.pid, self.started, time.time()))
                claimed.append(key)
        return claimed, finished, busy

    def release_all(self) -> None:
        """Drop every claim of this process (its cells did not finish: the next run takes them)."""
        with self._transaction():
            self.con.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))

    def rows(self) -> list[dict[str, Any]]:
        """Every cell recorded (this and earlier matrix runs into the same folder)."""
        return index_rows(self.con)

    def _transaction(self):
        con = self.con

        class _Tx:
            def __enter__(self_inner):
                con.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, *_):
                if con.in_transaction:
                    con.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()


def index_rows(con: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every cell recorded in the index (this and earlier matrix runs into the same folder)."""
    out = []
    query = ("SELECT modality, dataset, tokenizer, orderer, train_orderer, generator, status, reason, results_json, "
             "out_dir, seed, tokenizer_seed, key FROM cells ORDER BY finished_at")
    for r in con.execute(query):
        names = dict(zip(GROUP, r[:6]))
        out.append(result_row(names, r[6], r[7], json.loads(r[8]) if r[8] else None, r[9], seed=r[10],
                        tokenizer_seed=r[11], key=r[12]))
    return out


