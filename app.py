"""Parley: chat with many LLM providers at once. Run `python app.py`; `demo` is what Spaces serves."""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import os
import sys
import threading
from typing import Any

# Telemetry off before Gradio is imported (it reads this at import time).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# Start-up (Gradio, the SDKs, the UI) makes about a million objects that live as long as the server, and each
# full collection during it walked all of them again: 0.4-0.5 s of a 2.9 s start. The server (`python app.py`)
# runs no full collection until freeze_heap() has put them out of the collector's way; the younger generations
# are collected as usual, so start-up's short-lived garbage still goes.
GC_THRESHOLDS = gc.get_threshold()
if __name__ == "__main__":
    gc.set_threshold(GC_THRESHOLDS[0], GC_THRESHOLDS[1], 1_000_000_000)

import gradio as gr  # noqa: E402

from chat import tracing  # noqa: E402
from chat.registry import Registry, Settings, load_dotenv_file  # noqa: E402
from core.config import EPHEMERAL_NOTICE, AppConfig  # noqa: E402
from core.services import Services  # noqa: E402
from storage.db import init_db, make_engine, timeouts_from_env  # noqa: E402
from ui.a11y import A11Y_HEAD  # noqa: E402
from ui.chatbox import CHIP_SIZES  # noqa: E402
from ui.exports import export_guard  # noqa: E402
from ui.files import middleware as file_guard  # noqa: E402
from ui.gradio_patches import apply_all as apply_gradio_patches  # noqa: E402
from ui.keys import KEYS_HEAD  # noqa: E402
from ui.layout import CSS, build_ui  # noqa: E402
from ui.mcp import middleware as mcp_guard  # noqa: E402
from ui.plain_user import PLAIN_USER_HEAD  # noqa: E402
from ui.session_guard import middleware as session_guard  # noqa: E402
from ui.share_page import middleware as share_page  # noqa: E402

log = logging.getLogger("parley")

MAX_THREADS = 200  # also Gradio's number of queue worker slots, for async events too
M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def create_app(env: dict[str, str] | None = None, *, warm: bool = True) -> tuple[gr.Blocks, Services]:
    """Build the services and the UI from the environment (with `.env` loaded).

    `warm` imports the provider SDKs in a background thread now; `main` does it once the server
    answers instead, so that seconds of imports do not compete with start-up for the CPU.
    """
    if env is None:
        load_dotenv_file()
        env = dict(os.environ)
    config = AppConfig.from_env(env)
    if tracing.setup(env):  # only with OTEL_EXPORTER_OTLP_ENDPOINT set (chat/tracing.py)
        log.info("OpenTelemetry traces on (OTLP/HTTP)")  # not the endpoint: a URL can carry credentials
    if config.ephemeral_storage:
        log.warning("Chats are not kept for good: %s", EPHEMERAL_NOTICE)
    # uvicorn (read when launching) trusts X-Forwarded-For from loopback by default: TRUSTED_PROXIES decides.
    os.environ["FORWARDED_ALLOW_IPS"] = config.forwarded_allow_ips()
    registry = Registry.from_settings(Settings.from_env(env))
    engine = make_engine(config.database_url, **timeouts_from_env(env))  # type: ignore[arg-type]  # its keys are the two float timeouts, never busy_timeout_ms
    init_db(engine)
    if env.get("PARLEY_GRADIO_PATCHES", "on").lower() != "off":  # "off": Gradio as shipped (to compare)
        apply_gradio_patches()
    services = Services.build(config, registry, engine)
    # Only replies of processes that stopped sending heartbeats: other replicas' live ones stay.
    interrupted = services.start_heartbeat()
    if interrupted:
        log.info("marked %d replies of stopped processes interrupted", interrupted)
    if warm:
        start_warming(services)
    demo = build_ui(services)
    services.demo = demo
    # status_update_rate: Gradio's "auto" tells every waiting event about every start, which grows
    # with the square of a burst (about 5,000 messages for 100 users arriving together).
    demo.queue(default_concurrency_limit=None, max_size=None, status_update_rate=5)
    demo.max_threads = MAX_THREADS
    return demo, services


def start_warming(services: Services, *, freeze: bool = False) -> None:
    """SDK imports take seconds: do them in a thread, never on the event loop. `freeze`: then `freeze_heap()`."""
    threading.Thread(target=_warm, args=(services, freeze), name="parley-warm", daemon=True).start()


def _warm(services: Services, freeze: bool = False) -> None:
    try:
        services.registry.warm()
    finally:
        if freeze:
            freeze_heap()
        services.warmed.set()


def freeze_heap() -> None:
    """Leave what start-up built out of Python's full garbage collections from now on.

    Gradio, the UI and the SDKs are a few million objects that live as long as the process, and every
    full collection walked all of them: 50-250 ms with every stream paused, growing as the heap grew,
    which put 0.3 s on the first token of 20 users who arrived during one (bench/README.md, "Issue 20").
    One collection first, so that start-up's garbage is not kept for good; then `gc.freeze()` moves
    every object alive into a generation the collector never scans. Only for the server process
    (`main`): a test process builds many apps, and freezing each one's objects would keep them all.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)  # full collections again, of what comes after (see the top of this file)


def cap_malloc_arenas(arenas: int = 2) -> bool:
    """Let glibc's malloc use at most `arenas` arenas; True when the setting was given to glibc.

    glibc gives threads that allocate at the same time arenas of their own (up to 8 per core), and memory
    freed inside one is seldom given back to the system: with 2, the server held 242 -> 235 MB after 100
    sessions, at the same CPU per token (bench/README.md, "Issue 20, third session"). Only for the server
    process, before it starts its threads; MALLOC_ARENA_MAX in the environment (which glibc reads itself)
    decides instead when it is set, and other C libraries (musl) have no such setting.
    """
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


def launch_kwargs(services: Services) -> dict[str, Any]:
    """Options for demo.launch(): security defaults from the research notes, auth from APP_USERS."""
    config = services.config
    return dict(
        auth=config.users or None,
        auth_message="Sign in to Parley" if config.users else None,
        css=CSS,
        head=CHIP_SIZES + KEYS_HEAD  # keyboard shortcuts, focus, phone layout (ui/keys.py)
        + PLAIN_USER_HEAD  # user messages shown as typed, not as markdown (ui/plain_user.py)
        + A11Y_HEAD,  # contrast, names, focus on text boxes, live region, headings (ui/a11y.py)
        theme=gr.themes.Soft(primary_hue="indigo"),
        max_threads=MAX_THREADS,
        # The largest file anyone may upload: an attachment (MAX_FILE_MB), an import (MAX_IMPORT_MB) or a prompts file.
        max_file_size=max(config.max_import_bytes, config.max_file_bytes),
        show_error=False,
        enable_monitoring=False,
        footer_links=["api"],
        run_history=False,
        # Session hashes are bound to the login or browser that first used them (ui/session_guard.py).
        # Export downloads answer only their owner (ui/exports.py); uploads, attachments and every other
        # file Gradio serves from its upload folder only the caller it was given to (ui/files.py).
        # Share links' read-only pages (/share/<token>) are answered first, without a login (ui/share_page.py).
        # PARLEY_MCP=on: Gradio's MCP server, behind Parley's guard (login, only the four tools: ui/mcp.py).
        mcp_server=config.mcp_server,
        app_kwargs={"middleware": [mcp_guard(services), share_page(services), session_guard(), export_guard(services),
                                   file_guard()]},
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Parley: chat with several LLM providers at once.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), help="port (default 7860, or GRADIO_SERVER_PORT)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--mcp", action="store_true", help="serve Parley's MCP tools at /gradio_api/mcp/ (as PARLEY_MCP=on)")
    return parser.parse_args(argv)


def start_up_help(local_url: str | None, share_url: str | None) -> str:
    """What Gradio prints on start (with quiet=False), with this app's --share flag in place of its launch() advice."""
    lines = [f"* Running on local URL:  {local_url}"]
    if not share_url:  # Gradio prints the public URL itself, quiet or not
        lines.append("* To create a public link, run `python app.py --share` "
                     "(anyone with the link can use the app: set APP_USERS first).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stdout)
    for noisy in ("httpx", "httpx2", "openai", "anthropic", "google_genai", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    cap_malloc_arenas()
    if args.mcp:
        os.environ["PARLEY_MCP"] = "on"
    app, services = create_app(warm=False)
    # quiet: Gradio's own start-up help says to set `share=True` in launch(); here it is a flag.
    app.launch(server_name=args.host, server_port=args.port, share=args.share, prevent_thread_lock=True, quiet=True,
               **launch_kwargs(services))
    print(start_up_help(app.local_url, app.share_url), flush=True)
    start_warming(services, freeze=True)
    try:
        app.block_thread()
    finally:
        services.close()  # replies cut off by the shutdown are marked now, not after the grace period


_built: tuple[gr.Blocks, Services] | None = None


def __getattr__(name: str) -> gr.Blocks:
    """`from app import demo` (Gradio's reload mode, Spaces tooling) builds the app on first use."""
    global _built
    if name == "demo":
        if _built is None:
            _built = create_app()
        return _built[0]
    raise AttributeError(name)


if __name__ == "__main__":
    main()
