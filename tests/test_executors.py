"""Cells in worker processes, on Ray and through submitit; claims; a worker or driver
killed mid-matrix."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from seqify.cellindex import CellIndex
from seqify.executors import ExecutorSettings
from seqify.matrix import MatrixRequest, run_matrix
from seqify.plugins import build_registry
from seqify.testing import ToyPlugin

from tests.executor_plugin import KillerPlugin

ROOT = Path(__file__).resolve().parents[1]
BASE = dict(modalities=["toy"], orderers=["random", "margin", "raster"], generators=["unigram"], budget="smoke",
            seeds=[0, 1])


@pytest.fixture(scope="module")
def registry():
    return build_registry([ToyPlugin(), KillerPlugin()], warn=False)


def _numbers(result):
    return sorted((r["orderer"], r["seed"], r["status"], r["nats_per_token"], r["top1_accuracy"]) for r in result.rows)


@pytest.fixture(scope="module")
def in_process(registry, tmp_path_factory):
    return run_matrix(MatrixRequest(**BASE, out=tmp_path_factory.mktemp("one"),
                                    execution=ExecutorSettings(jobs=1, threads=1)), registry=registry)


def test_jobs_2_gives_the_numbers_of_one_process(in_process, registry, tmp_path):
    two = run_matrix(MatrixRequest(**BASE, out=tmp_path, execution=ExecutorSettings(jobs=2, threads=1)),
                     registry=registry)
    assert two.ran == 6 and _numbers(two) == _numbers(in_process)
    by = {(r["orderer"], r["seed"]): r for r in two.rows}
    # margin waits for the random cell of its seed, which trains the model both use, then reuses it
    assert all(by[("margin", s)]["shared_model"] and not by[("random", s)]["shared_model"] for s in (0, 1))
    assert (Path(by[("raster", 0)]["out_dir"]) / "progress.log").read_text().count("training") >= 1
    con = sqlite3.connect(tmp_path / "index.sqlite")
    assert con.execute("SELECT count(*) FROM cells WHERE status = 'done'").fetchone()[0] == 6
    assert con.execute("SELECT count(*) FROM claims").fetchone()[0] == 0  # every claim released


def test_a_worker_killed_mid_training_is_a_named_failure_and_resumes(registry, tmp_path, monkeypatch):
    marker = tmp_path / "kill-once"
    marker.touch()
    monkeypatch.setenv("SEQIFY_TEST_KILL_MARKER", str(marker))
    monkeypatch.setenv("SEQIFY_TEST_KILL_AFTER", "25")
    req = MatrixRequest(modalities=["toy"], orderers=["raster"], generators=["killer", "unigram"], budget="smoke",
                        out=tmp_path / "m", overrides={"train": {"checkpoint_every": 10}},
                        execution=ExecutorSettings(jobs=2, threads=1))
    first = run_matrix(req, registry=registry)
    by = {r["generator"]: r for r in first.rows}
    assert by["killer"]["status"] == "failed" and "worker died: killed by SIGKILL" in by["killer"]["reason"]
    assert by["unigram"]["status"] == "done"  # the other worker went on
    assert not marker.exists() and (Path(by["killer"]["out_dir"]) / "train_state.pt").is_file()
    second = run_matrix(req, registry=registry)
    assert second.ran == 1 and second.reused == 1
    assert {r["generator"]: r["status"] for r in second.rows} == {"killer": "done", "unigram": "done"}
    log = (Path(by["killer"]["out_dir"]) / "progress.log").read_text()
    assert "resuming from step 20" in log


def test_claims_keep_two_drivers_apart(tmp_path):
    idx = CellIndex(tmp_path / "index.sqlite")
    since = time.time() - 1
    assert idx.claim(["a", "b"], since=since) == (["a", "b"], [], [])
    other = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from seqify.cellindex import CellIndex
        idx = CellIndex({str(tmp_path / 'index.sqlite')!r})
        print(idx.claim(['a', 'c'], since=0), flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert other.stdout.readline().strip() == "(['c'], [], ['a'])"  # 'a' is ours, and we are alive
        assert idx.claim(["c"], since=since) == ([], [], ["c"])  # 'c' is the other driver's
    finally:
        other.kill()
        other.wait()
    assert idx.claim(["c"], since=since) == (["c"], [], [])  # its driver died: the claim is stale
    idx.record("a", dict.fromkeys(("modality", "dataset", "tokenizer", "orderer", "train_orderer", "generator"), "x"),
               "smoke", 0, None, "done", None, {"modelability": {}}, "out")
    later = CellIndex(tmp_path / "index.sqlite")
    assert later.claim(["a"], since=since) == ([], ["a"], [])  # finished by another driver since we started
    idx.close()
    later.close()
    con = sqlite3.connect(tmp_path / "index.sqlite")
    assert con.execute("SELECT count(*) FROM claims").fetchone()[0] == 0


DRIVER = """
import sys
from seqify.executors import ExecutorSettings
from seqify.matrix import MatrixRequest, run_matrix
from seqify.plugins import build_registry
from seqify.testing import ToyPlugin
from tests.executor_plugin import KillerPlugin
reg = build_registry([ToyPlugin(), KillerPlugin()], warn=False)
req = MatrixRequest(modalities=["toy"], orderers=["random", "raster"], generators=["unigram", "killer"], budget="smoke",
                    out=sys.argv[1], execution=ExecutorSettings(jobs=int(sys.argv[2]), threads=1), poll_s=0.5)
res = run_matrix(req, registry=reg)
print("RAN", res.ran, "REUSED", res.reused, flush=True)
"""


@pytest.mark.slow
def test_a_driver_killed_mid_matrix_resumes_and_two_drivers_share_the_work(tmp_path):
    out = tmp_path / "m"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]), "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(out), "1"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it once one cell is recorded
        if (out / "index.sqlite").is_file():
            con = sqlite3.connect(out / "index.sqlite", timeout=30)
            if con.execute("SELECT count(*) FROM cells").fetchone()[0] >= 1:
                break
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    recorded = sqlite3.connect(out / "index.sqlite", timeout=30).execute("SELECT count(*) FROM cells").fetchone()[0]
    assert 1 <= recorded < 4
    # two drivers at once on the same folder: every cell runs once, nothing is lost
    a = subprocess.Popen([sys.executable, "-c", DRIVER, str(out), "1"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    b = subprocess.Popen([sys.executable, "-c", DRIVER, str(out), "2"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=300)[0] for p in (a, b)]
    ran = [int(o.split("RAN ")[1].split()[0]) for o in outs]
    con = sqlite3.connect(out / "index.sqlite")
    assert con.execute("SELECT count(*) FROM cells WHERE status = 'done'").fetchone()[0] == 4
    assert sum(ran) == 4 - recorded  # the cells recorded before the kill ran once; the others once each, somewhere
    rows = json.loads(json.dumps(con.execute("SELECT key, finished_at FROM cells").fetchall()))
    assert len({k for k, _ in rows}) == 4


def _listening(port: int) -> set[str]:
    """The local addresses listening on TCP ``port`` (Linux /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                found.add(addr)
    return found


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1 in tcp and as ::ffff:127.0.0.1 in tcp6


def _ray_head(monkeypatch):
    """A real Ray head on 127.0.0.1 only: Ray resolves a loopback --node-ip-address to the
    machine's address unless told that clusters are off, and then binds its servers to
    the loopback address."""
    import socket
    import tempfile

    import importlib.util

    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install 'seqify[cluster]')")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # a loopback-only head of the tests: no token
    import ray  # after the environment: Ray reads it when imported (the driver must not resolve 127.0.0.1 either)

    assert not ray._private.ray_constants.ENABLE_RAY_CLUSTER, "ray was imported before the test set its environment"
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
                    f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                    f"--temp-dir={temp}"], check=True, capture_output=True, cwd=ROOT)
    return ray, f"127.0.0.1:{port}", port


def test_ray_and_submitit_give_the_numbers_of_one_process(in_process, registry, tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    slurm = run_matrix(MatrixRequest(**BASE, out=tmp_path / "slurm", execution=ExecutorSettings(
        executor="slurm", slurm_cluster="local", threads=1, time_min=5)), registry=registry)
    assert submitit and _numbers(slurm) == _numbers(in_process)
    ray, address, port = _ray_head(monkeypatch)
    try:
        assert _listening(port) and _listening(port) <= LOOPBACK  # the head answers on the loopback address only  # Ray's workers import the plugins installed with seqify (ToyPlugin), not this test folder
        on_ray = run_matrix(MatrixRequest(**BASE, out=tmp_path / "ray", execution=ExecutorSettings(
            executor="ray", address=address, threads=1)), registry=build_registry([ToyPlugin()], warn=False))
    finally:
        subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
    assert _numbers(on_ray) == _numbers(in_process)
    assert not ray.is_initialized()


def test_a_tokenizer_without_a_fit_shares_one_model_across_tokenizer_seeds(registry, tmp_path):
    req = MatrixRequest(modalities=["toy"], orderers=["raster"], generators=["unigram"], budget="smoke",
                        tokenizer_seeds=[0, 1], out=tmp_path, execution=ExecutorSettings(jobs=2, threads=1))
    res = run_matrix(req, registry=registry)
    assert [r["status"] for r in res.rows] == ["done", "done"]
    assert sorted(r["shared_model"] for r in res.rows) == [False, True]  # one trains, the other waits and reuses it
    assert res.rows[0]["nats_per_token"] == res.rows[1]["nats_per_token"]
