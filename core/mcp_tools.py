"""What Parley's MCP tools do beyond the use cases they call (ui/mcp.py is their thin Gradio face). No Gradio.

Who is calling (a login, HTTP Basic credentials of an APP_USERS user, or an anonymous caller of its
own), a blind comparison's answer (no model names), and a small scored batch from a list of prompts
(the Batch tab's use case, capped). The rules of chat, compare and batch stay in their use cases.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.batch import Batches, BatchInputError, summary_json
from core.compare_run import blind_label

#: A batch over MCP is small: it runs while the call waits (the Batch tab and the CLI are for big ones).
MAX_PROMPTS = 20
MAX_MODELS = 4
MAX_CALLS = 40
SIGN_IN = ("Sign in: this Parley has APP_USERS set; send the header `Authorization: Basic <base64 of name:password>` "
           "with the MCP requests.")


class RemoteRefused(Exception):
    """An MCP call refused before anything ran; the message says why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def basic_user(authorization: str | None, users: Sequence[tuple[str, str]]) -> str | None:
    """The APP_USERS name whose `name:password` the `Authorization: Basic ...` header carries, else None."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        name, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not sep:
        return None
    found = None
    for user, pw in users:  # every entry compared, in constant time each: no early exit to time
        if hmac.compare_digest(user.encode(), name.encode()) & hmac.compare_digest(pw.encode(), password.encode()):
            found = user
    return found


def remote_owner(*, login: str | None, authorization: str | None, users: Sequence[tuple[str, str]]) -> str:
    """The owner of an MCP call, as the browser's: `user:<name>` when signed in; RemoteRefused when a login is needed.

    Without APP_USERS a caller is anonymous: each call is an owner of its own (MCP over Gradio keeps no
    session), so nothing it saves is reachable by anyone else, and the rate limit also counts its address.
    """
    if login:
        return f"user:{login}"
    name = basic_user(authorization, users)
    if name:
        return f"user:{name}"
    if users:
        raise RemoteRefused(SIGN_IN)
    return f"session:mcp-{secrets.token_urlsafe(16)}"


def blind_panes(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A comparison's answer with no model named: the panes in their (random) order as "Model A"..., no cost
    (a price names its model), no tool calls, and an error said by its kind only (provider messages name it)."""
    panes = []
    for item in sorted(items, key=lambda i: int(i["position"])):
        pane = {k: v for k, v in item.items() if k not in ("model", "cost", "tools", "position")}
        pane["label"] = blind_label(int(item["position"]))
        if pane.get("error"):
            pane["error"] = f"This model's reply failed ({item.get('finish_reason') or 'error'})."
        panes.append(pane)
    return panes


def batch_prompts(prompts: Any, references: Any) -> bytes:
    """The prompts (and optional references, one each, "" for none) as the JSONL a prompts file holds."""
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise RemoteRefused("`prompts` must be a list of 1 to 20 non-empty texts.")
    if len(prompts) > MAX_PROMPTS:
        raise RemoteRefused(f"{len(prompts)} prompts: a batch over MCP takes at most {MAX_PROMPTS} "
                            "(the Batch tab and `python -m compare.batch` run bigger ones).")
    refs = references or []
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs) or (refs and len(refs) != len(prompts)):
        raise RemoteRefused("`references` must be a list of texts, one per prompt (\"\" for a prompt without one).")
    lines = []
    for i, prompt in enumerate(prompts, 1):
        row: dict[str, Any] = {"id": str(i), "prompt": prompt}
        if refs and refs[i - 1].strip():
            row["reference"] = refs[i - 1]
        lines.append(json.dumps(row, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


async def small_batch(batches: Batches, *, owner: str, request: Any, prompts: Any, models: Any,
                      references: Any = None, system_prompt: str = "", max_tokens: int | None = None) -> dict[str, Any]:
    """Run a small scored batch while the caller waits: validated, charged against the batch budget, as the Batch tab.

    Returns the summary (per model: done, errors, latency, tokens, cost, mean score with its interval;
    paired comparisons) and each reply (prompt id, model, text, score, error).
    """
    data = batch_prompts(prompts, references)
    if not isinstance(models, list) or not models or len(models) > MAX_MODELS:
        raise RemoteRefused(f"`models` must be a list of 1 to {MAX_MODELS} model names (provider:model).")
    if len(prompts) * len(models) > MAX_CALLS:
        raise RemoteRefused(f"{len(prompts)} prompts × {len(models)} models = {len(prompts) * len(models)} calls; "
                            f"a batch over MCP makes at most {MAX_CALLS}.")
    folder = Path(tempfile.mkdtemp(prefix="parley-mcp-"))  # 0700, a random name: the prompts are the caller's
    try:
        path = folder / "prompts.jsonl"
        path.write_bytes(data)
        try:
            job = await batches.prepare(str(path), models, 4, system_prompt, max_tokens)
            batches.check_idle(owner)
            await batches.charge(request, owner, job)
        except BatchInputError as e:
            raise RemoteRefused(e.message) from e
        run, task = batches.start(owner, job)
        try:
            summary = await task
            batches.finished(run, summary)
        finally:
            await batches.end(run.id)
            batches.discard(run)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    replies = [{"prompt_id": r.get("prompt_id"), "model": r.get("model"), "text": r.get("text"), "score": r.get("score"),
                "error": r.get("error")} for r in summary.rows]
    return {"summary": summary_json(summary), "replies": replies}
