"""Two Parley replicas behind nginx on one PostgreSQL and one Redis: a burst of users at once, and how many users one core serves.

`python -m bench.replicas [--users 200] [--runs 3] [--quick]` starts the fake provider, a fresh PostgreSQL
database, two Parley replicas on it and nginx with deploy/nginx.conf, then

- runs a burst of `--users` users at once through nginx, `--runs` times, each user with its own `parley_node`
  cookie so nginx spreads them over both replicas; and, alternating with it, the same burst against one replica
  directly (the baseline);
- sweeps users arriving over 10 s against one replica directly (20, 50, 100, 150 users; `--quick`: 20 only).

Every turn streams 200 tokens at 50 tokens/s (`openai:rate-50-tokens-200`). Each burst counts the replies saved
in PostgreSQL (finish_reason 'stop') by the replica that streamed them (message.instance_id -> replica.pid), so
"saved / expected" and "users per replica" are what the database holds, next to what nginx's X-Parley-Upstream
header said for the same cookies. Prints markdown tables.
BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432/test) is where the database is created and dropped;
BENCH_REDIS_URL defaults to redis://127.0.0.1:6379/14. BENCH_KEEP=1 keeps the work directory (process logs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import GradioChat, LoadResult, load, median, pct  # noqa: E402
from bench.procs import ROOT, FakeProvider, Parley, cpu_seconds, free_port  # noqa: E402

CHAT = "openai:rate-50-tokens-200"
WARM = "openai:rate-2000-tokens-200"
SWEEP = (20, 50, 100, 150)
SPREAD = 10.0
TTFT_TARGET = 1.0  # p95 seconds a level must meet to count as served, in the one-core line
PG_ADMIN = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SAVED_BY_PID_SQL = sa.text("SELECT r.pid, count(*) FROM message m LEFT JOIN replica r ON r.id = m.instance_id "
                           "WHERE m.role = 'assistant' AND m.finish_reason = 'stop' GROUP BY r.pid")


def psycopg_url(url: str) -> sa.URL:
    return sa.engine.make_url(url).set(drivername="postgresql+psycopg")


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """CREATE DATABASE parley_bench_<random>; dropped on the way out, however the bench ends."""
    name = "parley_bench_" + uuid.uuid4().hex[:10]
    admin = sa.create_engine(psycopg_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE: a replica killed mid-write can leave a backend behind that would block a plain DROP.
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        print(f"dropped database {name}", flush=True)


def clear_redis(url: str, prefix: str) -> None:
    try:
        import redis
    except ImportError:
        return
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (nginx's workers under its master)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


class Nginx:
    """nginx with deploy/nginx.conf filled in, in its own prefix directory, in the foreground."""

    def __init__(self, ports: list[int], workdir: Path):
        self.prefix = workdir / "nginx"
        self.prefix.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = (ROOT / "deploy" / "nginx.conf").read_text()
        for key, value in {"PREFIX": self.prefix, "PORT": self.port, "PORT_A": ports[0], "PORT_B": ports[1]}.items():
            conf = conf.replace("{{" + key + "}}", str(value))
        (self.prefix / "nginx.conf").write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        log = open(self.prefix / "stdout.log", "wb")
        self.proc = subprocess.Popen([exe, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"), "-g", "daemon off;"],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"{self.url}/gradio_api/info", timeout=2)
                return self
            except httpx.HTTPError as e:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"nginx did not start: {(self.prefix / 'stdout.log').read_text(errors='replace')}") from e
                time.sleep(0.1)

    def cpu(self) -> float:
        """CPU seconds of the master and its workers."""
        if self.proc is None:
            return 0.0
        total = 0.0
        for pid in [self.proc.pid, *child_pids(self.proc.pid)]:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM to the master: a fast shutdown that takes its workers along
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def new_client() -> httpx.AsyncClient:
    """For /config and the routing check only: each turn opens connections of its own (bench/loadgen.py)."""
    return httpx.AsyncClient(limits=httpx.Limits(max_connections=20), timeout=httpx.Timeout(60.0, connect=30.0))


async def upstreams_of(client: httpx.AsyncClient, url: str, users: range) -> dict[int, str]:
    """The replica nginx names (X-Parley-Upstream) for each user's cookie. nginx hashes the cookie, so a turn with that
    cookie goes to the same replica; the per-replica counts of saved turns in PostgreSQL confirm it run by run."""
    async def one(i: int) -> tuple[int, str]:
        # Any path will do (nginx adds the header to every answer, a 404 too); this one costs the replica nothing to refuse.
        r = await client.get(f"{url}/parley-bench-route-check", headers=user_headers(i))
        return i, r.headers.get("x-parley-upstream", "?")

    found: dict[int, str] = {}
    for chunk in range(users.start, users.stop, 20):
        found.update(await asyncio.gather(*(one(i) for i in range(chunk, min(chunk + 20, users.stop)))))
    return found


def user_headers(i: int) -> dict[str, str]:
    return {"Cookie": f"parley_node=u{i}"}


@dataclass
class Measure:
    label: str
    users: int
    lr: LoadResult
    cpu: dict[str, float]  # CPU seconds per process over the load (a burst's: and its saves)
    saved: dict[str, int]  # replies saved with finish_reason 'stop' during it, by the replica that streamed them

    @property
    def errors(self) -> list[str]:
        return self.lr.errors

    @property
    def saved_total(self) -> int:
        return sum(self.saved.values())

    def p(self, q: float) -> float | None:
        return pct(self.lr.ttfts(), q)


class Bench:
    def __init__(self, replicas: dict[str, Parley], nginx: Nginx, db_url: str):
        self.replicas, self.nginx = replicas, nginx
        self.engine = sa.create_engine(psycopg_url(db_url), pool_size=1)
        self.upstream_names = {f"127.0.0.1:{app.port}": name for name, app in replicas.items()}
        self.routed: Counter[str] = Counter()  # users per replica by nginx's header, for the burst's users

    def saved(self) -> dict[str, int]:
        """Saved replies per replica: each message keeps the id of the process that streamed it (its heartbeat row has the pid)."""
        names = {app.pid: name for name, app in self.replicas.items()}
        with self.engine.connect() as c:
            rows = c.execute(SAVED_BY_PID_SQL).all()
        out: Counter[str] = Counter()
        for pid, n in rows:
            out[names.get(pid, "other")] += int(n)
        return dict(out)

    async def wait_saved(self, before: dict[str, int], users: int, timeout: float = 20.0) -> dict[str, int]:
        """Replies are saved as each stream ends, a moment after the client saw it end: wait for them."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.saved()
            delta = {k: now.get(k, 0) - before.get(k, 0) for k in {*now, *before}}
            if sum(delta.values()) >= users or time.monotonic() > deadline:
                return {k: v for k, v in delta.items() if v}
            await asyncio.sleep(0.2)

    def cpu(self) -> dict[str, float]:
        return {**{name: app.cpu() for name, app in self.replicas.items()}, "nginx": self.nginx.cpu()}

    def settle(self) -> None:
        for app in self.replicas.values():
            app.settle()

    async def run(self, label: str, chat: GradioChat, users: int, spread: float = 0.0) -> Measure:
        self.settle()
        before = self.saved()
        ids = itertools.count()
        c0 = self.cpu()
        lr = await load(lambda: chat.turn(CHAT, headers=user_headers(next(ids))), users, spread)
        c_end = self.cpu()
        saved = await self.wait_saved(before, users)
        # A burst's CPU includes the saves that land after the last stream; a sweep's share is over the load's wall only.
        c1 = self.cpu() if spread == 0 else c_end
        m = Measure(label, users, lr, {k: c1[k] - c0[k] for k in c0}, saved)
        cpu_text = " / ".join(f"{k} {v:.2f}" for k, v in m.cpu.items())
        spread_text = f"over {spread:.0f} s" if spread else "at once"
        print(f"- {label}, {users} users {spread_text}: TTFT p50 {s(m.p(50))} p95 {s(m.p(95))} max {s(m.p(100))}, "
              f"errors {len(m.errors)}, saved {m.saved_total}/{users} (by replica {dict(sorted(saved.items()))}), "
              f"server CPU s {cpu_text}, client CPU {100 * lr.client_cpu_share:.0f}%", flush=True)
        for error in sorted(set(m.errors)):
            print(f"  - error ×{m.errors.count(error)}: {error}", flush=True)
        return m


def s(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


async def measure(bench: Bench, users: int, runs: int, levels: tuple[int, ...]) -> None:
    a_name = next(iter(bench.replicas))
    a = bench.replicas[a_name]
    async with new_client() as client:
        via_nginx = await GradioChat(client, bench.nginx.url).discover()
        direct = {name: await GradioChat(client, app.url).discover() for name, app in bench.replicas.items()}
        for chat in direct.values():
            for _ in range(3):  # imports, connections, SDK clients on each replica
                r = await chat.turn(WARM)
                assert r.error is None, r.error
        for i in range(4):
            r = await via_nginx.turn(WARM, headers=user_headers(10_000 + i))
            assert r.error is None, r.error
        routes = await upstreams_of(client, bench.nginx.url, range(users))
        bench.routed = Counter(bench.upstream_names.get(routes[i], routes[i]) for i in range(users))
        print(f"nginx routes the burst's {users} users (X-Parley-Upstream): {dict(sorted(bench.routed.items()))}", flush=True)
        if len(bench.routed) < 2:
            print("WARNING: nginx sends every user of the burst to one replica", flush=True)
        bench.settle()
        idle = a.idle_share(2.0)
        print(f"idle replica {a_name}: {100 * idle:.1f}% of a core", flush=True)

        bursts: dict[str, list[Measure]] = {"two": [], "one": []}
        for i in range(runs):
            order = ["two", "one"] if i % 2 == 0 else ["one", "two"]  # alternate so neither always runs on a warmer machine
            for kind in order:
                if kind == "two":
                    bursts["two"].append(await bench.run(f"run {i + 1}: two replicas behind nginx", via_nginx, users))
                else:
                    bursts["one"].append(await bench.run(f"run {i + 1}: one replica ({a_name}) directly", direct[a_name], users))

        sweep = [await bench.run(f"one replica ({a_name}) directly", direct[a_name], n, SPREAD) for n in levels]

    print()
    print(burst_table(bursts, users, list(bench.replicas), bench.routed))
    print()
    print(sweep_table(sweep, a_name, idle))
    print()
    print(one_core_line(sweep, a_name))


def burst_table(bursts: dict[str, list[Measure]], users: int, names: list[str], routed: Counter[str]) -> str:
    both = " / ".join(names)
    lines = [f"#### A burst of {users} users at once (200 tokens at 50 tok/s each)", "",
             f"nginx's X-Parley-Upstream header for the {users} users' cookies: "
             + ", ".join(f"{routed.get(n, 0)} on {n}" for n in names) + ".", "",
             f"| run | setup | TTFT p50 s | TTFT p95 s | errors | turns saved ({both}) | saved / expected | server CPU s ({both} / nginx) | client CPU |",
             "|---|---|---:|---:|---:|---|---:|---|---:|"]
    labels = {"two": "two replicas behind nginx", "one": f"one replica ({names[0]}) directly"}
    for kind in ("two", "one"):
        for i, m in enumerate(bursts[kind]):
            per = " / ".join(str(m.saved.get(n, 0)) for n in names)
            cpu = " / ".join(f"{m.cpu[n]:.2f}" for n in names) + (f" / {m.cpu['nginx']:.2f}" if kind == "two" else " / –")
            lines.append(f"| {i + 1} | {labels[kind]} | {s(m.p(50))} | {s(m.p(95))} | {len(m.errors)} | {per} | "
                         f"{m.saved_total} / {m.users} | {cpu} | {100 * m.lr.client_cpu_share:.0f}% |")
    lines += ["", "| setup | median p95 TTFT s | errors, all runs | saved / expected, all runs |", "|---|---:|---:|---:|"]
    for kind in ("two", "one"):
        ms = bursts[kind]
        if ms:
            lines.append(f"| {labels[kind]} | {s(median([m.p(95) or 0.0 for m in ms]))} | {sum(len(m.errors) for m in ms)} | "
                         f"{sum(m.saved_total for m in ms)} / {sum(m.users for m in ms)} |")
    return "\n".join(lines)


def sweep_table(sweep: list[Measure], name: str, idle: float) -> str:
    lines = [f"#### One replica ({name}), no nginx: users arriving over {SPREAD:.0f} s (200 tokens at 50 tok/s each)", "",
             "| users | TTFT p50 s | TTFT p95 s | errors | server CPU s | share of one core | CPU s per turn | saved / expected | client CPU |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in sweep:
        cpu = m.cpu[name]
        ok = m.users - len(m.errors)
        lines.append(f"| {m.users} | {s(m.p(50))} | {s(m.p(95))} | {len(m.errors)} | {cpu:.2f} | {100 * cpu / m.lr.wall:.0f}% | "
                     f"{cpu / ok if ok else float('nan'):.3f} | {m.saved_total} / {m.users} | {100 * m.lr.client_cpu_share:.0f}% |")
    lines.append(f"\nShare of one core: the replica's CPU seconds over the load's wall time (first arrival to last reply); "
                 f"the idle replica uses {100 * idle:.1f}%.")
    return "\n".join(lines)


def one_core_line(sweep: list[Measure], name: str) -> str:
    """The largest level served (p95 TTFT within the target, no errors, every turn saved), and what its CPU per turn implies."""
    served = [m for m in sweep if not m.errors and m.saved_total >= m.users and (m.p(95) or float("inf")) <= TTFT_TARGET]
    if not served:
        return f"**One core:** no level measured met p95 TTFT ≤ {TTFT_TARGET:.1f} s with no errors and every turn saved."
    m = max(served, key=lambda m: m.users)
    per_turn = m.cpu[name] / m.users
    stream_s = median(m.lr.ttlts()) or 4.0
    # Linear in users at that level's cost: the cost per turn still falls as more streams share each event-loop tick,
    # so this is an estimate from below, and it ignores the TTFT a queue at 100% would add.
    return (f"**One core:** one replica served {m.users} users arriving over {SPREAD:.0f} s with p95 TTFT {s(m.p(95))} s "
            f"(target ≤ {TTFT_TARGET:.1f} s), no errors and every turn saved, at {100 * m.cpu[name] / m.lr.wall:.0f}% of a core "
            f"({'the largest level measured' if m is sweep[-1] else 'a larger level missed the target'}). At that level's "
            f"{per_turn:.3f} s of server CPU per turn and {stream_s:.1f} s per reply, a fully busy core would stream about "
            f"{stream_s / per_turn:.0f} replies at once (≈ {1 / per_turn:.0f} new users a second).")


def start_all(apps: list[Parley]) -> None:
    """Both at once: each start is seconds of imports, and there are two cores."""
    with ThreadPoolExecutor(len(apps)) as pool:
        list(pool.map(lambda app: app.start(), apps))


def _exit_on_term(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so the finally blocks stop the processes and drop the database


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=200, help="users in each burst")
    parser.add_argument("--runs", type=int, default=3, help="bursts per setup")
    parser.add_argument("--quick", action="store_true", help="the one-core sweep at 20 users only")
    parser.add_argument("--levels", help="comma-separated user counts for the one-core sweep (default 20,50,100,150)")
    args = parser.parse_args(argv)
    levels = tuple(int(x) for x in args.levels.split(",")) if args.levels else (SWEEP[:1] if args.quick else SWEEP)
    signal.signal(signal.SIGTERM, _exit_on_term)

    workdir = Path(tempfile.mkdtemp(prefix="parley-bench-replicas-"))
    rate_prefix = "parley-bench-" + uuid.uuid4().hex[:8]
    started = time.monotonic()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs", flush=True)
    ok = False
    fake = FakeProvider(workdir).start()
    replicas: dict[str, Parley] = {}
    nginx: Nginx | None = None
    try:
        with fresh_database(PG_ADMIN) as db_url:
            try:
                env = {"DATABASE_URL": db_url, "REDIS_URL": REDIS_URL, "PARLEY_RATE_PREFIX": rate_prefix}
                replicas = {name: Parley(fake, workdir, name=f"replica-{name}", **env) for name in ("A", "B")}
                start_all(list(replicas.values()))
                nginx = Nginx([app.port for app in replicas.values()], workdir).start()
                bench = Bench(replicas, nginx, db_url)
                try:
                    asyncio.run(measure(bench, args.users, args.runs, levels))
                finally:
                    bench.engine.dispose()
                ok = True
            finally:
                if nginx is not None:
                    nginx.stop()
                for app in replicas.values():
                    app.stop()
                    shutil.rmtree(app.db_dir, ignore_errors=True)  # the SQLite directory procs.Parley makes; PostgreSQL is used
    finally:
        fake.stop()
        with contextlib.suppress(Exception):  # a leftover key in a scratch Redis database must not hide the real error
            clear_redis(REDIS_URL, rate_prefix)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; wall {time.monotonic() - started:.0f} s", flush=True)
        if ok and not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work directory (process logs): {workdir}", flush=True)


if __name__ == "__main__":
    main()
