"""tests/parallel.py's xdist scheduler, driven as pytest-xdist drives it, with workers simulated step by step:
every test runs once, a module or a part of the browser modules stays on one worker in order, and a serial
module starts only after every other worker has left."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from tests import parallel

pytest.importorskip("xdist")

COLLECTION = [
    "tests/browser/test_a_browser.py::test_one",
    "tests/browser/test_a_browser.py::test_two",
    "tests/browser/test_chat_browser.py::test_c",
    "tests/browser/test_scaleout.py::test_three",
    "tests/storage/test_db.py::test_x[sqlite]",
    "tests/storage/test_db.py::test_x[postgres]",
    "tests/test_resilience.py::test_killed",
    "tests/test_resilience.py::test_database_down",
    "tests/test_pricing.py::test_a",
    "tests/test_pricing.py::test_b",
    "tests/test_pricing.py::test_c",
    "tests/core/test_stats.py::test_s",
]


class Worker:
    """What the scheduler sees of an xdist worker; like one, it runs a test only once it holds the next
    one too (or is shutting down)."""

    def __init__(self, name: str):
        self.name, self.queue, self.shutting_down = name, [], False
        self.gateway = SimpleNamespace(id=name)

    def send_runtest_some(self, indices: list[int]) -> None:
        self.queue.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True

    def __repr__(self) -> str:
        return self.name


def run(collection: list[str], workers: int) -> tuple[list[tuple[int, Worker, str, int]], list[Worker]]:
    """Every test as it ran: (step, worker, node id, workers still up)."""
    config = SimpleNamespace(getvalue=lambda name: ["popen"] * workers, option=SimpleNamespace(loadscopereorder=True))
    sched = parallel.make_scheduler(config, None)
    nodes = [Worker(f"gw{i}") for i in range(workers)]
    for node in nodes:
        sched.add_node(node)
    for node in nodes:
        sched.add_node_collection(node, collection)
    sched.schedule()
    log: list[tuple[int, Worker, str, int]] = []
    for step in itertools.count():
        assert step < 1000, "the run never ended"
        if not sched.nodes:
            return log, nodes
        for node in list(sched.nodes):  # each worker up takes one step
            if len(node.queue) >= 2 or (node.shutting_down and node.queue):
                index = node.queue.pop(0)
                log.append((step, node, collection[index], len(sched.nodes)))
                sched.mark_test_complete(node, index)
            elif node.shutting_down:
                sched.remove_node(node)  # the worker's session finished
        if sched.tests_finished:  # what xdist's DSession does then
            for node in sched.nodes:
                node.shutdown()
    raise AssertionError("unreachable")


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 12])
def test_every_test_runs_once_and_serial_ones_run_alone_at_the_end(workers):
    log, _ = run(COLLECTION, workers)
    assert sorted(nodeid for _, _, nodeid, _ in log) == sorted(COLLECTION)
    serial = [entry for entry in log if parallel.is_serial(entry[2])]
    others = [entry for entry in log if not parallel.is_serial(entry[2])]
    assert [nodeid for _, _, nodeid, _ in serial] == ["tests/test_resilience.py::test_killed", "tests/test_resilience.py::test_database_down"]
    assert all(up == 1 for *_, up in serial), "no other worker was up while a serial test ran"
    assert max(step for step, *_ in others) < min(step for step, *_ in serial)


@pytest.mark.parametrize("workers", [2, 3, 6])
def test_browser_parts_and_modules_stay_whole_on_one_worker_in_order(workers):
    log, _ = run(COLLECTION, workers)
    parts = parallel.browser_parts((n.split("::")[0] for n in COLLECTION), workers)
    if workers < 6:
        assert parts == dict.fromkeys(["tests/browser/test_a_browser.py", "tests/browser/test_chat_browser.py", "tests/browser/test_scaleout.py"], 0)
    else:  # one Chromium per three workers
        assert parts == {"tests/browser/test_a_browser.py": 0, "tests/browser/test_chat_browser.py": 1, "tests/browser/test_scaleout.py": 0}
    where: dict[str, set[str]] = {}
    for _, node, nodeid, _ in log:
        where.setdefault(parallel.unit(nodeid, parts), set()).add(node.name)
    assert set(where) >= {"tests/browser/part-0", "tests/test_pricing.py"}
    assert all(len(names) == 1 for names in where.values()), where
    part_0 = [nodeid for _, _, nodeid, _ in log if parallel.unit(nodeid, parts) == "tests/browser/part-0"]
    assert part_0 == [n for n in COLLECTION if parallel.unit(n, parts) == "tests/browser/part-0"]


def test_a_run_without_serial_tests_and_one_with_only_them_both_finish():
    log, _ = run([n for n in COLLECTION if not parallel.is_serial(n)], 3)
    assert len(log) == len(COLLECTION) - 2
    only = [n for n in COLLECTION if parallel.is_serial(n)]
    log, _ = run(only, 3)
    assert [nodeid for _, _, nodeid, _ in log] == only


class Item:
    def __init__(self, nodeid: str, marks: tuple[str, ...] = ()):
        self.nodeid, self.marks = nodeid, list(marks)

    def get_closest_marker(self, name: str):
        return name if name in self.marks else None

    def add_marker(self, mark) -> None:
        self.marks.append(mark.name)


def test_serial_modules_are_marked_and_a_serial_mark_elsewhere_is_refused():
    from tests.conftest import pytest_collection_modifyitems

    listed, other = Item("tests/test_resilience.py::test_killed"), Item("tests/test_pricing.py::test_a")
    pytest_collection_modifyitems(None, [listed, other])
    assert listed.marks == ["serial"] and other.marks == []
    with pytest.raises(pytest.UsageError, match="tests/test_pricing.py::test_b is marked serial: list its module in tests/parallel.py"):
        pytest_collection_modifyitems(None, [Item("tests/test_pricing.py::test_b", ("serial",))])


def test_auto_worker_count_keeps_a_one_module_run_in_process(monkeypatch, tmp_path):
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.chdir(tmp_path)
    assert parallel.workers(["tests"], tmp_path) == 3
    assert parallel.workers(["tests/test_pricing.py"], tmp_path) == 0
    assert parallel.workers(["tests/test_pricing.py::test_a", "tests/test_pricing.py::test_b"], tmp_path) == 0
    assert parallel.workers(["tests/browser/test_a_browser.py", "tests/browser/test_scaleout.py"], tmp_path) == 0
    assert parallel.workers(["tests/test_pricing.py", "tests/browser/test_scaleout.py"], tmp_path) == 2
    assert parallel.workers(["tests/test_pricing.py", "tests/test_params.py", "tests/storage"], tmp_path) == 3
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "2")
    assert parallel.workers(["tests/test_pricing.py"], tmp_path) == 2
