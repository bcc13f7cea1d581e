"""Parley's streaming benchmarks against the raw SDK and a tutorial-style app, as ratios from one run.

    python -m bench            # full mode (about 10 minutes on 2 cores)
    python -m bench --quick    # fewer runs, smaller loads (under 3 minutes)
    python -m bench --out bench/results/full.md

Every app runs as its own process with the fake provider server (tests/fakes) in another; one async
httpx client in this process drives both apps through Gradio's queue protocol (bench/loadgen.py).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import browser, profile, upload  # noqa: E402
from bench.loadgen import FIRST_WORD, GradioChat, LoadResult, RawSDK, last_word, load, median, new_client, pct  # noqa: E402
from bench.procs import App, FakeProvider, Parley, Tutorial  # noqa: E402

LONG = "openai:rate-2000-tokens-4000"
HUGE = "openai:rate-0-tokens-20000"
CHAT = "openai:rate-50-tokens-200"
FAST = "openai:rate-0-tokens-200"


@dataclass(frozen=True)
class Mode:
    name: str
    runs_long: int = 5  # 4,000 tokens at 2,000 tok/s, each app
    runs_huge: int = 5  # 20,000 tokens unthrottled
    runs_ttft: int = 7  # one user, 200 at 50 tok/s
    runs_20: int = 3  # 20 users together (Parley, raw); the tutorial runs once
    tutorial_20_model: str = CHAT
    sustained_users: int = 100
    sustained_spread: float = 10.0
    runs_sustained: int = 3
    burst_users: int = 100
    runs_burst: int = 3
    rss_sessions: int = 100
    runs_cold: int = 3
    runs_browser: int = 3
    browser_models: tuple[str, ...] = (CHAT, LONG)
    upload_users: int = 20  # others streaming while one client uploads a 10 MB image (bench/upload.py)
    upload_spread: float = 2.0
    runs_upload: int = 6  # rounds, each with and without the upload


FULL = Mode("full")
QUICK = Mode("quick", runs_long=2, runs_huge=1, runs_ttft=2, runs_20=1, rss_sessions=50, tutorial_20_model="openai:rate-50-tokens-20",
             sustained_users=50, sustained_spread=5.0, runs_sustained=1, runs_burst=1, runs_cold=1, runs_browser=1,
             browser_models=(CHAT,), runs_upload=2)


@dataclass
class Row:
    scenario: str
    raw: str = "–"
    tutorial: str = "–"
    parley: str = "–"
    ratio: str = "–"
    target: str = "–"
    verdict: str = "–"
    client: str = "–"  # the load generator's CPU share of one core


@dataclass
class Report:
    mode: Mode
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    profile_md: str = ""
    client_shares: list[float] = field(default_factory=list)

    def note(self, text: str) -> None:
        print("  " + text, flush=True)
        self.details.append(text)


START = time.perf_counter()
LOAD_AT_START = os.getloadavg()


def phase(name: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f} s] == {name}", flush=True)


def s(x: float | None, unit: str = "s", digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if unit == "ms":
        return f"{x * 1000:.0f} ms"
    return f"{x:.{digits}f} s"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**hit**" if ok else "**MISS**")


def share(*loads: LoadResult) -> str:
    """The load generator's worst CPU share of one core while it drove an app (raw-SDK loads excluded)."""
    worst = max((lr.client_cpu_share for lr in loads if not lr.extra.get("raw")), default=0.0)
    return f"{100 * worst:.0f}%"


class Bench:
    def __init__(self, mode: Mode, workdir: Path):
        self.mode = mode
        self.workdir = workdir
        self.report = Report(mode)
        self.fake = FakeProvider(workdir).start()
        self.raw = RawSDK(self.fake.openai_base_url)
        self.parley: Parley | None = None
        self.tutorial: Tutorial | None = None
        self.cleanup: list[App] = []

    # -- helpers ----------------------------------------------------------------------------

    def start_pair(self) -> tuple[Parley, Tutorial]:
        parley = Parley(self.fake, self.workdir)
        tutorial = Tutorial(self.fake, self.workdir)
        self.cleanup += [parley, tutorial]
        parley.start()
        tutorial.start()
        parley.settle()
        tutorial.settle()
        return parley, tutorial

    async def timed(self, app: App | None, coro) -> tuple[LoadResult, float, float]:
        """(load result, server CPU seconds, fake-server CPU seconds) of one load."""
        c0 = app.cpu() if app else 0.0
        f0 = self.fake.cpu()
        lr = await coro
        c1 = app.cpu() if app else 0.0
        lr.extra["raw"] = app is None
        if app is not None:  # the raw SDK's own parsing runs in this process: it is the measured thing there
            self.report.client_shares.append(lr.client_cpu_share)
        return lr, c1 - c0, self.fake.cpu() - f0

    # -- phases ----------------------------------------------------------------------------

    async def streaming(self) -> None:
        m, rep = self.mode, self.report
        assert self.parley and self.tutorial
        async with new_client() as client:
            gp = await GradioChat(client, self.parley.url).discover()
            gt = await GradioChat(client, self.tutorial.url, bare_model=True).discover()
            targets = {"raw": (None, self.raw.turn), "tutorial": (self.tutorial, gt.turn), "parley": (self.parley, gp.turn)}
            for _, turn in targets.values():  # warm-up: imports, connections, the SDK clients
                await load(lambda turn=turn: turn("openai:rate-2000-tokens-200"), 1)
            idle = {name: targets[name][0].idle_share() for name in ("tutorial", "parley")}  # type: ignore[union-attr]  # only "raw" has no app
            rep.note(f"idle server CPU: tutorial {100 * idle['tutorial']:.1f}%, parley {100 * idle['parley']:.1f}% of a core "
                     "(Gradio's queue loop wakes every 1 ms when the queue is empty)")

            # Memory and CPU over 100 quick sessions (all arrive at once; the tutorial queues them one by one).
            phase(f"{m.rss_sessions} sessions (RSS)")
            rss: dict[str, tuple[int, int, float, int]] = {}
            for name in ("tutorial", "parley"):
                app, turn = targets[name]
                before = app.rss_kb()  # type: ignore[union-attr]  # tutorial and parley have an app; only "raw" has none
                lr, cpu, _ = await self.timed(app, load(lambda turn=turn: turn(FAST), m.rss_sessions))
                rss[name] = (before, app.rss_kb(), cpu, len(lr.errors))  # type: ignore[union-attr]  # as above
                rep.note(f"{m.rss_sessions} sessions of {FAST} on {name}: RSS {before / 1024:.0f} → {rss[name][1] / 1024:.0f} MB, "
                         f"server CPU {cpu:.2f} s ({1000 * cpu / (200 * m.rss_sessions):.3f} s per 1,000 tokens), "
                         f"wall {lr.wall:.1f} s, errors {len(lr.errors)}" + (f"; first error: {lr.errors[0]}" if lr.errors else ""))
            # The tutorial talks to one provider. Parley imports the SDK of every provider it has a key for (the
            # Anthropic SDK alone is ~40 MB), so the like-for-like figure is Parley with only OpenAI's key.
            rss["parley, OpenAI only"] = await self.rss_openai_only(client)

            # One stream at a time, the three targets interleaved so that noise hits them alike.
            async def one_at_a_time(model: str, runs: int) -> dict[str, list]:
                out: dict[str, list] = {k: [] for k in targets}
                cpu: dict[str, float] = {k: 0.0 for k in targets}
                for _ in range(runs):
                    for name, (app, turn) in targets.items():
                        lr, c, _ = await self.timed(app, load(lambda turn=turn: turn(model), 1))
                        out[name].append(lr)
                        cpu[name] += c
                out["cpu"] = cpu  # type: ignore[assignment]  # the per-target CPU seconds ride along under "cpu"
                return out

            for model, runs, limit, label in ((LONG, m.runs_long, 1.05, "4,000 tokens at 2,000 tok/s: time to last token"),
                                              (HUGE, m.runs_huge, 1.3, "20,000 tokens unthrottled: time to last token")):
                phase(f"{label}")
                res = await one_at_a_time(model, runs)
                med = {k: median([lr.results[0].ttlt for lr in res[k] if lr.results[0].ttlt is not None]) for k in targets}
                errs = {k: sum(len(lr.errors) for lr in res[k]) for k in targets}
                for k in targets:
                    rep.note(f"{model} {k}: ttlt {[round(lr.results[0].ttlt or -1, 3) for lr in res[k]]}, errors {errs[k]}")
                ratio = med["parley"] / med["raw"] if med["parley"] and med["raw"] else None
                rep.rows.append(Row(
                    f"{label} (median of {runs})", s(med["raw"]),
                    s(med["tutorial"]) + (f" ({med['tutorial'] / med['raw']:.2f}×)" if med["tutorial"] and med["raw"] else ""),
                    s(med["parley"]), f"{ratio:.3f}× raw" if ratio else "n/a", f"≤ {limit}× raw",
                    verdict(ratio is not None and ratio <= limit and errs["parley"] == 0), share(*[lr for k in targets for lr in res[k]]),
                ))

            phase("1 user, 200 tokens at 50 tok/s: time to first token")
            saved0 = self.parley.saved_replies()
            res = await one_at_a_time(CHAT, m.runs_ttft)
            saved = self.parley.saved_replies() - saved0
            med = {k: median([lr.results[0].ttft for lr in res[k] if lr.results[0].ttft is not None]) for k in targets}
            for k in targets:
                rep.note(f"{CHAT} {k}: ttft ms {[round(1000 * (lr.results[0].ttft or -1)) for lr in res[k]]}, errors {sum(len(lr.errors) for lr in res[k])}")
            delta = med["parley"] - med["tutorial"] if med["parley"] and med["tutorial"] else None
            rep.rows.append(Row(
                f"1 user, 200 tokens at 50 tok/s: time to first token (median of {m.runs_ttft}); Parley saved {saved}/{m.runs_ttft} turns",
                s(med["raw"], "ms"), s(med["tutorial"], "ms"), s(med["parley"], "ms"),
                f"{delta * 1000:+.0f} ms vs tutorial" if delta is not None else "n/a", "≤ tutorial + 20 ms, turn saved",
                verdict(delta is not None and delta <= 0.020 and saved == m.runs_ttft), share(*[lr for k in targets for lr in res[k]]),
            ))
            cpu_single = {k: res["cpu"][k] / (0.2 * m.runs_ttft) for k in ("tutorial", "parley")}  # type: ignore[index]  # res["cpu"] is that dict of CPU seconds

            phase("20 users at once")
            p95s: dict[str, list[float | None]] = {"raw": [], "parley": []}
            loads: list[LoadResult] = []
            parley_cpu_20 = 0.0
            for _ in range(m.runs_20):
                for name in ("raw", "parley"):
                    app, turn = targets[name]
                    lr, c, _ = await self.timed(app, load(lambda turn=turn: turn(CHAT), 20))
                    loads.append(lr)
                    p95s[name].append(pct(lr.ttfts(), 95))
                    parley_cpu_20 += c if name == "parley" else 0.0
                    rep.note(f"20 users {name}: TTFT p50 {s(pct(lr.ttfts(), 50))} p95 {s(pct(lr.ttfts(), 95))} max {s(pct(lr.ttfts(), 100))}, "
                             f"errors {len(lr.errors)}, client CPU {100 * lr.client_cpu_share:.0f}%")
            tlr, tcpu, _ = await self.timed(self.tutorial, load(lambda: gt.turn(m.tutorial_20_model), 20))
            loads.append(tlr)
            tut_tokens = 20 * int(m.tutorial_20_model.rsplit("-", 1)[1])
            rep.note(f"20 users tutorial ({m.tutorial_20_model}): TTFT p50 {s(pct(tlr.ttfts(), 50))} p95 {s(pct(tlr.ttfts(), 95))} "
                     f"max {s(pct(tlr.ttfts(), 100))}, errors {len(tlr.errors)}, wall {tlr.wall:.1f} s, server CPU {tcpu:.2f} s")
            p95p = median([x for x in p95s["parley"] if x is not None])
            rep.rows.append(Row(
                f"20 users arriving together (200 at 50 tok/s): p95 time to first token (median of {m.runs_20} runs; tutorial 1 run"
                + ("" if m.tutorial_20_model == CHAT else f" of {m.tutorial_20_model.split(':')[1]}") + ")",
                s(median([x for x in p95s["raw"] if x is not None])), s(pct(tlr.ttfts(), 95)), s(p95p), "–", "≤ 0.5 s",
                verdict(p95p is not None and p95p <= 0.5 and not any(lr.errors for lr in loads[:-1])), share(*loads),
            ))

            await self.upload_row(client, gp)

            phase(f"{m.sustained_users} users over {m.sustained_spread:.0f} s")
            p95s = {"raw": [], "parley": []}
            loads = []
            errors = 0
            saved_ok = True
            sustained_cpu = sustained_tokens = 0.0
            sustained_fake = 0.0
            for i in range(m.runs_sustained):
                for name in (("raw", "parley") if i == 0 else ("parley",)):
                    app, turn = targets[name]
                    before = self.parley.saved_replies()
                    lr, c, fake_cpu = await self.timed(app, load(lambda turn=turn: turn(CHAT), m.sustained_users, m.sustained_spread))
                    loads.append(lr)
                    p95s[name].append(pct(lr.ttfts(), 95))
                    extra = ""
                    if name == "parley":
                        got = self.parley.saved_replies() - before
                        saved_ok &= got == m.sustained_users
                        errors += len(lr.errors)
                        sustained_cpu += c
                        sustained_fake += fake_cpu
                        sustained_tokens += 200 * (m.sustained_users - len(lr.errors))
                        extra = f", saved {got}/{m.sustained_users}, server CPU {c:.2f} s, fake CPU {fake_cpu:.2f} s"
                    rep.note(f"{m.sustained_users} users over {m.sustained_spread:.0f} s {name}: TTFT p50 {s(pct(lr.ttfts(), 50))} "
                             f"p95 {s(pct(lr.ttfts(), 95))} max {s(pct(lr.ttfts(), 100))}, TTLT p95 {s(pct(lr.ttlts(), 95))}, "
                             f"errors {len(lr.errors)}{extra}, client CPU {100 * lr.client_cpu_share:.0f}%"
                             + (f"; first error: {lr.errors[0]}" if lr.errors else ""))
            p95p = median([x for x in p95s["parley"] if x is not None])
            rep.rows.append(Row(
                f"{m.sustained_users} users over {m.sustained_spread:.0f} s (200 at 50 tok/s): p95 TTFT (median of {m.runs_sustained}); "
                f"errors {errors}; saved all: {'yes' if saved_ok else 'NO'}",
                s(median([x for x in p95s["raw"] if x is not None])), "not run (limit 1: ~400 s serial)", s(p95p), "–",
                "≤ 0.5 s, 0 errors, all saved", verdict(p95p is not None and p95p <= 0.5 and errors == 0 and saved_ok), share(*loads),
            ))

            phase(f"burst of {m.burst_users}")
            p95s = {"raw": [], "parley": []}
            loads = []
            for i in range(m.runs_burst):
                for name in (("raw", "parley") if i == 0 else ("parley",)):
                    app, turn = targets[name]
                    lr, c, _ = await self.timed(app, load(lambda turn=turn: turn(CHAT), m.burst_users))
                    loads.append(lr)
                    p95s[name].append(pct(lr.ttfts(), 95))
                    rep.note(f"burst {m.burst_users} {name}: TTFT p50 {s(pct(lr.ttfts(), 50))} p95 {s(pct(lr.ttfts(), 95))} "
                             f"max {s(pct(lr.ttfts(), 100))}, errors {len(lr.errors)}, server CPU {c:.2f} s, client CPU {100 * lr.client_cpu_share:.0f}%")
            prof_note = ""
            if profile.py_spy():
                out = self.workdir / "burst.pyspy.txt"
                sampler = profile.Sampler(self.parley.pid, out)
                t0 = time.perf_counter()
                lr, c, _ = await self.timed(self.parley, load(lambda: gp.turn(CHAT), m.burst_users))
                seconds = time.perf_counter() - t0
                sampler.stop()
                loads.append(lr)
                rep.note(f"burst {m.burst_users} parley under py-spy: TTFT p50 {s(pct(lr.ttfts(), 50))} p95 {s(pct(lr.ttfts(), 95))}, server CPU {c:.2f} s")
                try:
                    rep.profile_md = profile.markdown(profile.summarise(out), seconds, 100)
                    prof_note = "profile below"
                except OSError as e:
                    prof_note = f"profile failed: {e}"
            else:
                prof_note = "py-spy not installed: no profile"
            rep.rows.append(Row(
                f"burst of {m.burst_users} users at once (200 at 50 tok/s): p95 TTFT (median of {m.runs_burst})",
                s(median([x for x in p95s["raw"] if x is not None])), "not run (limit 1: ~400 s serial)",
                s(median([x for x in p95s["parley"] if x is not None])), "–", "none (" + prof_note + ")", "–", share(*loads),
            ))

            cpu_load = sustained_cpu / (sustained_tokens / 1000) if sustained_tokens else None
            tut_load = tcpu / (tut_tokens / 1000)
            rep.rows.append(Row(
                "server CPU s per 1,000 streamed tokens (200 at 50 tok/s): one user / under load "
                f"(Parley {m.sustained_users} users over {m.sustained_spread:.0f} s, tutorial 20 queued users)",
                "–", f"{cpu_single['tutorial']:.3f} / {tut_load:.3f}", f"{cpu_single['parley']:.3f} / {cpu_load:.3f}" if cpu_load else "n/a",
                # The target is judged under load, where CPU per token decides how many users a process
                # serves. One user alone pays for a smooth stream (20 updates a second) and for a server
                # that is otherwise idle; that figure is reported next to it, against the tutorial's.
                f"{cpu_load / tut_load:.2f}× tutorial (load)" if cpu_load else "n/a", "≤ 0.3 s under load",
                verdict(cpu_load is not None and cpu_load <= 0.3),
            ))
            rep.rows.append(Row(
                f"resident memory after {m.rss_sessions} sessions (VmRSS; at start → after)",
                "–", f"{rss['tutorial'][0] / 1024:.0f} → {rss['tutorial'][1] / 1024:.0f} MB",
                f"{rss['parley'][0] / 1024:.0f} → {rss['parley'][1] / 1024:.0f} MB",
                f"{rss['parley'][1] / rss['tutorial'][1]:.2f}× tutorial", "report", "–",
            ))
            one = rss["parley, OpenAI only"]
            rep.rows.append(Row(
                f"resident memory after {m.rss_sessions} sessions, Parley with only OpenAI's key (as the tutorial)",
                "–", f"{rss['tutorial'][0] / 1024:.0f} → {rss['tutorial'][1] / 1024:.0f} MB",
                f"{one[0] / 1024:.0f} → {one[1] / 1024:.0f} MB", f"{one[1] / rss['tutorial'][1]:.2f}× tutorial", "report", "–",
            ))
            rep.note(f"RSS at the end of the load phases: tutorial {self.tutorial.rss_kb() / 1024:.0f} MB, parley {self.parley.rss_kb() / 1024:.0f} MB")
            await self.raw.close()

    async def rss_openai_only(self, client: httpx.AsyncClient) -> tuple[int, int, float, int]:
        """RSS before/after the sessions load on a Parley whose only provider key is OpenAI's (started and stopped here)."""
        m = self.mode
        app = Parley(self.fake, self.workdir, name="parley-openai-only", ANTHROPIC_API_KEY="", GEMINI_API_KEY="", GOOGLE_API_KEY="")
        self.cleanup.append(app)
        app.start()
        app.settle()
        try:
            chat = await GradioChat(client, app.url).discover()
            await load(lambda: chat.turn("openai:rate-2000-tokens-200"), 1)
            app.settle()
            before = app.rss_kb()
            lr, cpu, _ = await self.timed(app, load(lambda: chat.turn(FAST), m.rss_sessions))
            after = app.rss_kb()
            self.report.note(f"{m.rss_sessions} sessions of {FAST} on Parley with only OpenAI's key: RSS {before / 1024:.0f} → "
                             f"{after / 1024:.0f} MB, errors {len(lr.errors)}")
            return before, after, cpu, len(lr.errors)
        finally:
            app.stop()

    async def upload_row(self, client: httpx.AsyncClient, gp: GradioChat) -> None:
        m, rep = self.mode, self.report
        phase(f"10 MB image upload while {m.upload_users} users stream")
        res = await upload.measure(client, gp, lambda: gp.turn(CHAT), m.upload_users, m.upload_spread, m.runs_upload)
        for note in res.notes:
            rep.note(note)
        added = res.added
        rep.rows.append(Row(
            f"one 10 MB image uploaded and sent (to {upload.VISION_MODEL}) while {m.upload_users} others arrive over "
            f"{m.upload_spread:.0f} s (200 at 50 tok/s): the others' p95 TTFT without → with it (pooled over {m.runs_upload} "
            f"rounds, order alternating); errors {res.errors}, upload failures {len(res.upload_errors)}",
            "–", "–", f"{s(res.p95_without)} → {s(res.p95_with)}", f"{added * 1000:+.0f} ms" if added is not None else "n/a",
            "≤ +50 ms at p95", verdict(added is not None and added <= 0.050 and res.errors == 0 and not res.upload_errors),
        ))

    def cold_start(self) -> None:
        phase("cold start")
        times: dict[str, list[float]] = {"tutorial": [], "parley": []}
        for i in range(self.mode.runs_cold):
            for name, cls in (("tutorial", Tutorial), ("parley", Parley)):
                app = cls(self.fake, self.workdir, name=f"cold-{name}-{i}")
                self.cleanup.append(app)
                times[name].append(app.start())
                app.stop()
        med = {k: median(v) for k, v in times.items()}
        self.report.note(f"cold start tutorial {[round(t, 2) for t in times['tutorial']]}, parley {[round(t, 2) for t in times['parley']]}")
        ratio = med["parley"] / med["tutorial"]  # type: ignore[operator]  # medians of non-empty lists: never None
        self.report.rows.append(Row(f"cold start: process start to first 200 from /config (median of {self.mode.runs_cold})",
                                    "–", s(med["tutorial"], digits=2), s(med["parley"], digits=2), f"{ratio:.2f}× tutorial", "≤ 1.2× tutorial",
                                    verdict(ratio <= 1.2)))

    def browser(self) -> None:
        for model in self.mode.browser_models:
            phase(f"browser {model}")
            first, last = FIRST_WORD, last_word(model)
            parley = Parley(self.fake, self.workdir, name="browser-parley", DEFAULT_MODEL=model)
            tutorial = Tutorial(self.fake, self.workdir, name="browser-tutorial", TUTORIAL_MODEL=model.split(":", 1)[1])
            self.cleanup += [parley, tutorial]
            try:
                parley.start()
                tutorial.start()
                parley.settle()
                tutorial.settle()
                res = {
                    "tutorial": browser.measure(tutorial.url, "textarea", first, last, self.mode.runs_browser),
                    "parley": browser.measure(parley.url, "#msg textarea", first, last, self.mode.runs_browser),
                }
            except Exception as e:  # noqa: BLE001 - one failed measure is a row, not a lost run
                self.report.note(f"browser {model} failed: {type(e).__name__}: {e}")
                self.report.rows.append(Row(f"browser, {model}", "–", "failed", "failed", "–", "report", "n/a"))
                continue
            finally:
                parley.stop()
                tutorial.stop()
            for k, v in res.items():
                self.report.note(f"browser {model} {k}: first {[round(x.first * 1000) for x in v]} ms, last {[round(x.last, 3) for x in v]} s")
            med = {k: (median([x.first for x in v]), median([x.last for x in v])) for k, v in res.items()}
            n = self.mode.runs_browser
            self.report.rows.append(Row(
                f"browser (Chromium), {model.split(':')[1]}: Enter → first token painted / → last token painted (median of {n})",
                "–", f"{s(med['tutorial'][0], 'ms')} / {s(med['tutorial'][1])}", f"{s(med['parley'][0], 'ms')} / {s(med['parley'][1])}",
                f"{1000 * (med['parley'][0] - med['tutorial'][0]):+.0f} ms / {med['parley'][1] / med['tutorial'][1]:.2f}×", "report", "–",
            ))

    def close(self) -> None:
        for app in self.cleanup:
            app.stop()
            if isinstance(app, Parley):
                shutil.rmtree(app.db_dir, ignore_errors=True)
        self.fake.stop()

    # -- run --------------------------------------------------------------------------------

    def run(self) -> Report:
        self.parley, self.tutorial = self.start_pair()
        try:
            asyncio.run(self.streaming())
        finally:
            self.parley.stop()
            self.tutorial.stop()
        self.cold_start()
        self.browser()
        return self.report


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) // 1024 // 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit, dirty = "unknown", ""
    import gradio
    import openai

    return (f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, commit {commit}{' + uncommitted changes' if dirty else ''}; "
            f"{os.cpu_count()} × {cpu}, {mem} GB RAM, {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, gradio {gradio.__version__}, openai {openai.__version__}; loopback fake provider; "
            f"load average at start {LOAD_AT_START[0]:.1f}, at the end {os.getloadavg()[0]:.1f} (other jobs share the machine)")


def render(report: Report, seconds: float) -> str:
    lines = [f"### Results ({report.mode.name} mode, {seconds / 60:.1f} min)", "", machine(), "",
             "| scenario | raw SDK | tutorial app | Parley | Parley vs baseline | target | verdict | load-gen CPU |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.scenario} | {r.raw} | {r.tutorial} | {r.parley} | {r.ratio} | {r.target} | {r.verdict} | {r.client} |" for r in report.rows]
    worst = max(report.client_shares, default=0.0)
    lines += ["", f"Load generator: at most {100 * worst:.0f}% of one core during any measured load (it has two).", "",
              "<details><summary>Per-run numbers</summary>", "", *[f"- {d}" for d in report.details], "", "</details>"]
    if report.profile_md:
        lines += ["", "#### Where a burst's server time goes (py-spy)", "", report.profile_md]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and smaller loads (under 3 minutes)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, py-spy output)")
    args = parser.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    workdir = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    started = time.perf_counter()
    bench = Bench(QUICK if args.quick else FULL, workdir)
    try:
        report = bench.run()
    finally:
        bench.close()
        if args.keep:
            print(f"work directory: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = render(report, time.perf_counter() - started)
    print()
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
