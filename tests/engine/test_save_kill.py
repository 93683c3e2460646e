"""Saving survives being killed at any moment: the target is always a complete old or new file,
and the temporary file a killed save leaves behind is removed by the next save."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import numpy as np

from engine import serialize
from engine.graph import Graph
from engine.serialize import Project


def _project(value: float) -> Project:
    g = Graph()
    p = g.add_node("Parameter", {"shape": (200, 250)}, node_id="w", name="w")
    rng = np.random.default_rng(int(value))
    # Noise: it does not deflate, so a save spends its time in every phase (pack, write, fsync).
    return Project(g, f"version {value}", weights={p.id: {"value": rng.standard_normal((200, 250)) + value}})


def _temps(path: Path) -> list[str]:
    return sorted(n for n in os.listdir(path.parent) if n.startswith(f".{path.name}.") and n.endswith(".tmp"))


def _saving_child(path: Path, projects: list[Project]) -> int:
    """A forked child that saves the two versions in turn until it is killed."""
    pid = os.fork()
    if pid == 0:
        try:
            i = 0
            while True:
                serialize.save(projects[i % 2], path)
                i += 1
        finally:
            os._exit(0)
    return pid


def test_a_save_killed_at_random_points_leaves_the_old_or_the_new_file_and_no_temporary_file(tmp_path: Path) -> None:
    projects = [_project(1.0), _project(2.0)]
    complete = {serialize.container_bytes(p) for p in projects}
    path = tmp_path / "model.bps"
    t0 = time.perf_counter()
    serialize.save(projects[0], path)
    one_save = time.perf_counter() - t0
    rnd = random.Random(0)
    landed = kills = 0
    for kills in range(1, 25):
        pid = _saving_child(path, projects)
        if kills % 2:  # at any moment of a save: packing, writing, syncing, renaming
            time.sleep(rnd.uniform(0.0, 3 * one_save))
        else:  # while the temporary file is being written (the window is short on a fast disk)
            deadline = time.perf_counter() + 10 * one_save + 5
            while not _temps(path) and time.perf_counter() < deadline:
                pass
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        data = path.read_bytes()
        assert data in complete, f"kill {kills} left {len(data)} bytes that are neither version"
        landed += bool(_temps(path))
    # The kills landed mid-write (else this test would prove nothing) ...
    assert landed >= 4, f"only {landed} of {kills} kills landed while a temporary file existed"
    # ... and the next save cleans up what they left.
    serialize.save(projects[1], path)
    assert _temps(path) == []
    assert serialize.load(path).name == "version 2.0"


def test_a_temporary_file_of_a_live_save_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    live = tmp_path / f".model.json.{os.getppid()}.abcdefgh.tmp"  # our parent: alive, and not us
    dead_pid = 2**22 + 12345  # above the kernel's pid_max default: no such process
    dead = tmp_path / f".model.json.{dead_pid}.abcdefgh.tmp"
    other = tmp_path / ".model.json.bps.1.abcdefgh.tmp"  # a temporary file of another target
    for f in (live, dead, other):
        f.write_bytes(b"partial")
    serialize.save(_project(1.0), path)
    assert live.exists() and other.exists() and not dead.exists()
