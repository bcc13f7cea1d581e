"""How the suite is split between pytest-xdist workers (`-n auto` in pytest.ini; tests/conftest.py uses this).

A worker gets whole units: a test module (as `--dist loadfile` would: its module fixtures, such as an
app it starts, are built once), except that the browser modules form one unit per three workers, so that a
worker runs a part's modules in order with one Chromium and starts each module's apps while the one
before it runs (tests/browser/conftest.py). The modules in SERIAL run alone: once every other worker
has finished, on the last one still up.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

#: Modules that cannot share the machine with other tests: test_resilience stops the PostgreSQL server
#: every PostgreSQL test uses. tests/conftest.py marks their tests `serial` (`-m "not serial"` leaves them out).
SERIAL = ("tests/test_resilience.py",)
BROWSER = "tests/browser/"
#: Workers per Chromium: the browser modules are about 40% of the suite's time. On the 2-core CI machine (busy
#: with other runs too), one process took 1,028 s, 3 workers with one Chromium 597 s and 587 s, and 4 workers
#: with two Chromiums 1,078 s (browser tests timing out): Chromium and its app processes need the CPU.
WORKERS_PER_BROWSER = 3


def workers(args: list[str], root: Path) -> int:
    """`-n auto`: measured on the 2-core CI machine, where the suite mostly waits on sockets, Chromium and
    child processes. A run of test files that make one unit (one module, or browser modules only) stays in
    this process (0), as without xdist; PYTEST_XDIST_AUTO_NUM_WORKERS overrides it (`-n 0`: one process)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS", "").strip().isdigit():
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    most = min((os.cpu_count() or 1) + 1, 6)
    paths = [Path(arg.split("::", 1)[0]) for arg in args]
    if paths and all(p.suffix == ".py" for p in paths):  # named files, not folders: at most one worker a unit
        units = {unit(_relative(p, root)) for p in paths}
        return 0 if len(units) == 1 else min(most, len(units))
    return most


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def browser_parts(paths: Iterable[str], workers: int) -> dict[str, int]:
    """Each browser module's part (module paths relative to the root): one part per WORKERS_PER_BROWSER
    workers, dealt out in path order."""
    ordered = sorted({p for p in paths if p.startswith(BROWSER)})
    count = max(1, workers // WORKERS_PER_BROWSER)
    return {path: i % count for i, path in enumerate(ordered)}


def unit(nodeid: str, parts: dict[str, int] | None = None) -> str:
    """The unit of work a test belongs to: its module, or its part of the browser modules."""
    path = nodeid.split("::", 1)[0]
    if not path.startswith(BROWSER):
        return path
    return f"{BROWSER}part-{(parts or {}).get(path, 0)}"


def is_serial(nodeid: str) -> bool:
    return nodeid.split("::", 1)[0] in SERIAL


def make_scheduler(config, log):
    """The xdist scheduler: LoadScopeScheduling over `unit`, holding the SERIAL units back until every
    other worker has finished (each is shut down when nothing but serial work is left, and a worker
    runs its queue's last test only then)."""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def __init__(self, config, log=None):
            super().__init__(config, log)
            self.serial_runner = None  # the worker kept up for the serial units
            self.parts: dict[str, int] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.parts is None:  # first called once every worker's collection is in
                self.parts = browser_parts((n.split("::", 1)[0] for n in self.collection or ()), self.numnodes)
            return unit(nodeid, self.parts)

        def _assign_work_unit(self, node) -> None:
            # The browser parts first: they are the longest, and the modules fill the workers around them.
            scope = next((s for s in self.workqueue if s.startswith(BROWSER)), None)
            scope = scope or next((s for s in self.workqueue if s not in SERIAL), None)
            if scope is None:  # only serial work is left
                if self.serial_runner is None:
                    self.serial_runner = node
                if node is not self.serial_runner:
                    if not node.shutting_down:
                        node.shutdown()  # it runs what it still holds, then leaves (remove_node)
                    return
                if len(self.nodes) > 1:
                    return  # others are still running tests: wait for them to leave
                scope = next(iter(self.workqueue))
            self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

        def remove_node(self, node):
            crashitem = super().remove_node(node)
            if node is self.serial_runner:
                self.serial_runner = None
            runner = self.serial_runner
            if self.workqueue and (runner is None or self.nodes == [runner]):
                for other in self.nodes:  # the last of the others has left: the serial units may start
                    self._reschedule(other)
            return crashitem

    return Scheduling(config, log)
