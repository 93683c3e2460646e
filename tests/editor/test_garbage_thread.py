"""Python's cyclic garbage collector runs only in the GUI thread once a window exists: a worker
thread that allocates (a pass, training) must never free a closed window's widgets (a deadlock
between Qt's connection mutex and the GIL, seen with gdb on a hung test run)."""

from __future__ import annotations

import gc
import threading

from editor.window import MainWindow


class _Cycle:
    freed_in: list[str] = []

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        _Cycle.freed_in.append(threading.current_thread().name)


def test_cyclic_garbage_is_freed_in_the_gui_thread_not_in_a_worker(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    assert not gc.isenabled()  # no collection wherever an allocation happens to cross the threshold
    _Cycle.freed_in.clear()
    _Cycle()  # garbage only a collection frees

    def allocate() -> None:  # as a pass does: many new containers
        keep = []
        for i in range(200_000):
            keep.append([i])
            if len(keep) > 1000:
                keep.clear()

    worker = threading.Thread(target=allocate, name="worker")
    worker.start()
    worker.join()
    assert _Cycle.freed_in == []  # the worker's allocations collected nothing
    qtbot.waitUntil(lambda: bool(_Cycle.freed_in), timeout=5_000)
    assert _Cycle.freed_in == [threading.main_thread().name]
