"""The bytes of each provider's wire format: stream events, unary bodies, error bodies, model lists.

Shapes follow /work/shared/research/providers.md sections 1.4-1.5, 2.1-2.4, 3.2-3.4 and 5, and the recordings in
tests/fixtures/provider-streams/.
"""

from __future__ import annotations

import json
import secrets
import time
from http import HTTPStatus
from typing import Any

_PH = "\x00PARLEY\x00"
_PH_JSON = json.dumps(_PH)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _template(obj: Any) -> tuple[bytes, bytes]:
    """Split the JSON of obj around the placeholder string so a text can be spliced in cheaply."""
    pre, suf = json.dumps(obj, separators=(",", ":")).split(_PH_JSON)
    return pre.encode(), suf.encode()


def _jtext(text: str) -> bytes:
    return json.dumps(text).encode()


def fragments(s: str, parts: int = 4) -> list[str]:
    """Split s into up to `parts` non-empty consecutive pieces (tool-call argument fragments)."""
    if not s:
        return []
    size = max(1, -(-len(s) // parts))
    return [s[i : i + size] for i in range(0, len(s), size)]


def new_id(prefix: str, n: int = 12) -> str:
    return prefix + secrets.token_hex(n)


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return {529: "Site Overloaded"}.get(status, "Unknown")


class Usage:
    """Token counts reported at the end of a stream."""

    def __init__(self, prompt: int, completion: int = 0, reasoning: int = 0) -> None:
        self.prompt = prompt
        self.completion = completion
        self.reasoning = reasoning


# --------------------------------------------------------------------------------------------- OpenAI


class OpenAIWire:
    """Chat Completions chunks: `data: {json}\\n\\n` ... `data: [DONE]\\n\\n`."""

    provider = "openai"
    supports_reasoning = False
    content_type = "text/event-stream; charset=utf-8"

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = new_id("chatcmpl-", 14)
        self.created = int(time.time())
        pre, suf = _template(self._chunk({"content": _PH}))
        self._pre, self._suf = b"data: " + pre, suf + b"\n\n"

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_parley",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    @staticmethod
    def _event(obj: Any) -> bytes:
        return b"data: " + _dumps(obj).encode() + b"\n\n"

    def head(self) -> list[bytes]:
        return [self._event(self._chunk({"role": "assistant", "content": "", "refusal": None}))]

    def reasoning(self, piece: str) -> list[bytes]:
        return []

    def reasoning_end(self) -> list[bytes]:
        return []

    def text(self, piece: str) -> list[bytes]:
        return [self._pre + _jtext(piece) + self._suf]

    def text_end(self) -> list[bytes]:
        return []

    def tools(self, calls: list[dict[str, Any]]) -> list[bytes]:
        out = []
        for i, call in enumerate(calls):
            first = {"index": i, "id": new_id("call_", 12), "type": "function",
                     "function": {"name": call["name"], "arguments": ""}}
            out.append(self._event(self._chunk({"role": "assistant", "content": None, "tool_calls": [first]})))
            for frag in fragments(_dumps(call.get("arguments", {}))):
                out.append(self._event(self._chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]})))
        return out

    def default_finish(self, tools: bool) -> str:
        return "tool_calls" if tools else "stop"

    def finish(self, reason: str, usage: Usage) -> list[bytes]:
        out = [self._event(self._chunk({}, reason))]
        if self.include_usage:
            chunk = self._chunk({})
            chunk["choices"] = []
            chunk["usage"] = openai_usage(usage)
            out.append(self._event(chunk))
        out.append(b"data: [DONE]\n\n")
        return out

    def error_event(self, fail_type: str | None) -> list[bytes]:
        err = {"message": "The server had an error while processing your request. Sorry about that!",
               "type": fail_type or "server_error", "param": None, "code": None}
        return [self._event({"error": err})]

    def unary(self, text: str, calls: list[dict[str, Any]], reason: str, usage: Usage) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None, "annotations": []}
        if calls:
            message["tool_calls"] = [
                {"id": new_id("call_", 12), "type": "function",
                 "function": {"name": c["name"], "arguments": _dumps(c.get("arguments", {}))}}
                for c in calls
            ]
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "system_fingerprint": "fp_parley",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
            "usage": openai_usage(usage),
        }


def openai_usage(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.prompt,
        "completion_tokens": u.completion,
        "total_tokens": u.prompt + u.completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


class OpenAIResponsesWire:
    """Responses API events: `event: <type>\ndata: {json}\n\n` with a `sequence_number`, no `[DONE]`.

    The sequence of the documentation's example (tests/fixtures/provider-streams/openai_responses_doc_example.sse):
    response.created, response.in_progress, then per output item output_item.added ... output_item.done, and
    response.completed / response.incomplete / response.failed with the whole response. A reasoning item
    (when the request asks for `reasoning`) streams its summary and ends with `encrypted_content` when the
    request `include`s it; function calls stream their arguments.
    """

    provider = "openai"
    content_type = "text/event-stream; charset=utf-8"

    def __init__(self, model: str, prompt_tokens: int, body: dict[str, Any]) -> None:
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.body = body
        self.supports_reasoning = isinstance(body.get("reasoning"), dict)
        # Without `reasoning.summary` the model still reasons (an item, encrypted content) but streams no summary.
        self.summary = self.supports_reasoning and bool(body["reasoning"].get("summary"))
        self.encrypted = "reasoning.encrypted_content" in (body.get("include") or [])
        self.id = new_id("resp_", 24)
        self.created = int(time.time())
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the output item being streamed
        self.text_so_far = ""

    def _event(self, obj: dict[str, Any]) -> bytes:
        obj = {**obj, "sequence_number": self.seq}
        self.seq += 1
        return b"event: " + obj["type"].encode() + b"\ndata: " + _dumps(obj).encode() + b"\n\n"

    def _response(self, status: str, usage: Usage | None = None, incomplete: str | None = None,
                  error: dict[str, Any] | None = None) -> dict[str, Any]:
        b = self.body
        reasoning = b.get("reasoning") if isinstance(b.get("reasoning"), dict) else {}
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "background": False, "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": b.get("instructions"), "max_output_tokens": b.get("max_output_tokens"),
            "model": self.model, "output": list(self.output) if status != "in_progress" else [],
            "parallel_tool_calls": True, "previous_response_id": None,
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
            "store": b.get("store", True), "temperature": b.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto",
            "tools": b.get("tools") or [], "top_p": b.get("top_p", 1.0), "truncation": "disabled",
            "usage": responses_usage(usage) if usage is not None else None, "user": None, "metadata": {},
        }

    def _add(self, item: dict[str, Any]) -> bytes:
        self.open = item
        return self._event({"type": "response.output_item.added", "output_index": len(self.output),
                            "item": {**item, "status": "in_progress"} if item["type"] != "reasoning" else item})

    def _done(self, item: dict[str, Any]) -> bytes:
        index = len(self.output)
        self.output.append(item)
        self.open = None
        return self._event({"type": "response.output_item.done", "output_index": index, "item": item})

    def head(self) -> list[bytes]:
        return [self._event({"type": "response.created", "response": self._response("in_progress")}),
                self._event({"type": "response.in_progress", "response": self._response("in_progress")})]

    def reasoning(self, piece: str) -> list[bytes]:
        out = []
        if self.open is None or self.open["type"] != "reasoning":
            out.append(self._add({"id": new_id("rs_", 24), "type": "reasoning", "summary": []}))
            if self.summary:
                out.append(self._event({"type": "response.reasoning_summary_part.added", "item_id": self.open_id,
                                        "output_index": len(self.output), "summary_index": 0,
                                        "part": {"type": "summary_text", "text": ""}}))
            self.text_so_far = ""
        self.text_so_far += piece
        if not self.summary:
            return out
        out.append(self._event({"type": "response.reasoning_summary_text.delta", "item_id": self.open_id,
                                "output_index": len(self.output), "summary_index": 0, "delta": piece,
                                "obfuscation": "x"}))
        return out

    @property
    def open_id(self) -> str:
        return self.open["id"] if self.open else ""

    def reasoning_end(self) -> list[bytes]:
        if self.open is None or self.open["type"] != "reasoning":
            return []
        text, rid, index = self.text_so_far, self.open_id, len(self.output)
        part = {"type": "summary_text", "text": text}
        item: dict[str, Any] = {"id": rid, "type": "reasoning", "summary": [part] if self.summary else []}
        if self.encrypted:
            item["encrypted_content"] = encrypted_reasoning(text)
        if not self.summary:
            return [self._done(item)]
        return [
            self._event({"type": "response.reasoning_summary_text.done", "item_id": rid, "output_index": index,
                         "summary_index": 0, "text": text}),
            self._event({"type": "response.reasoning_summary_part.done", "item_id": rid, "output_index": index,
                         "summary_index": 0, "part": part}),
            self._done(item),
        ]

    def text(self, piece: str) -> list[bytes]:
        out = []
        if self.open is None or self.open["type"] != "message":
            out.append(self._add({"id": new_id("msg_", 24), "type": "message", "role": "assistant", "content": []}))
            out.append(self._event({"type": "response.content_part.added", "item_id": self.open_id,
                                    "output_index": len(self.output), "content_index": 0,
                                    "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}}))
            self.text_so_far = ""
        self.text_so_far += piece
        out.append(self._event({"type": "response.output_text.delta", "item_id": self.open_id,
                                "output_index": len(self.output), "content_index": 0, "delta": piece,
                                "logprobs": [], "obfuscation": "x"}))
        return out

    def text_end(self) -> list[bytes]:
        if self.open is None or self.open["type"] != "message":
            return []
        text, mid, index = self.text_so_far, self.open_id, len(self.output)
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
        return [
            self._event({"type": "response.output_text.done", "item_id": mid, "output_index": index,
                         "content_index": 0, "text": text, "logprobs": []}),
            self._event({"type": "response.content_part.done", "item_id": mid, "output_index": index,
                         "content_index": 0, "part": part}),
            self._done({"id": mid, "type": "message", "status": "completed", "role": "assistant", "content": [part]}),
        ]

    def tools(self, calls: list[dict[str, Any]]) -> list[bytes]:
        out = self.text_end()
        for call in calls:
            args = _dumps(call.get("arguments", {}))
            item = {"id": new_id("fc_", 24), "type": "function_call", "call_id": new_id("call_", 12),
                    "name": call["name"], "arguments": ""}
            out.append(self._add(item))
            index = len(self.output)
            for frag in fragments(args):
                out.append(self._event({"type": "response.function_call_arguments.delta", "item_id": item["id"],
                                        "output_index": index, "delta": frag, "obfuscation": "x"}))
            out.append(self._event({"type": "response.function_call_arguments.done", "item_id": item["id"],
                                    "output_index": index, "arguments": args}))
            out.append(self._done({**item, "arguments": args, "status": "completed"}))
        return out

    def default_finish(self, tools: bool) -> str:
        return "completed"

    def finish(self, reason: str, usage: Usage) -> list[bytes]:
        """`reason`: completed (or stop); length / max_output_tokens or content_filter (response.incomplete);
        failed (response.failed, a server_error)."""
        out = self.text_end() + self.reasoning_end()
        if reason == "failed":
            error = {"code": "server_error", "message": "The server had an error processing your request."}
            return out + [self._event({"type": "response.failed", "response": self._response("failed", error=error)})]
        incomplete = {"length": "max_output_tokens", "max_output_tokens": "max_output_tokens",
                      "content_filter": "content_filter"}.get(reason)
        if incomplete:
            return out + [self._event({"type": "response.incomplete",
                                       "response": self._response("incomplete", usage, incomplete)})]
        return out + [self._event({"type": "response.completed", "response": self._response("completed", usage)})]

    def error_event(self, fail_type: str | None) -> list[bytes]:
        return [self._event({"type": "error", "code": fail_type or "server_error",
                             "message": "The server had an error while processing your request. Sorry about that!",
                             "param": None})]

    def unary(self, text: str, calls: list[dict[str, Any]], reason: str, usage: Usage) -> dict[str, Any]:
        self.head()
        if text:
            self.text(text)
        self.tools(calls)
        self.text_end()
        return self._response("completed", usage)


def encrypted_reasoning(text: str) -> str:
    """The fake's opaque `encrypted_content` of a reasoning item: derived from its text, so tests can expect it."""
    import base64

    return "gAAAAA" + base64.urlsafe_b64encode(text.encode()).decode()


def responses_usage(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": u.completion + u.reasoning,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.prompt + u.completion + u.reasoning,
    }


_OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country, region, or territory not supported"),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 10ms."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def openai_error(status: int, message: str | None = None, etype: str | None = None, code: str | None = None,
                 param: str | None = None) -> dict[str, Any]:
    dtype, dcode, dmsg = _OPENAI_ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error",
                                                     None, reason_phrase(status)))
    return {"error": {"message": message or dmsg, "type": etype or dtype, "param": param,
                      "code": code if code is not None else dcode}}


def openai_models(names: list[str]) -> dict[str, Any]:
    return {"object": "list",
            "data": [{"id": n, "object": "model", "created": 1700000000, "owned_by": "parley-fake"} for n in names]}


# ------------------------------------------------------------------------------------------ Anthropic


class AnthropicWire:
    """Messages events: `event: <type>\\ndata: {json}\\n\\n`, every event ended by a blank line."""

    provider = "anthropic"
    supports_reasoning = True
    content_type = "text/event-stream; charset=utf-8"

    def __init__(self, model: str, prompt_tokens: int) -> None:
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.id = new_id("msg_", 12)
        self.index = -1
        self.open: str | None = None
        self._text_pre: bytes = b""
        self._text_suf: bytes = b""

    @staticmethod
    def _event(obj: dict[str, Any]) -> bytes:
        return b"event: " + obj["type"].encode() + b"\ndata: " + _dumps(obj).encode() + b"\n\n"

    def _start(self, block: dict[str, Any]) -> bytes:
        self.index += 1
        self.open = block["type"]
        return self._event({"type": "content_block_start", "index": self.index, "content_block": block})

    def _stop(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [self._event({"type": "content_block_stop", "index": self.index})]

    def head(self) -> list[bytes]:
        message = {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.prompt_tokens, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 1, "service_tier": "standard"},
        }
        return [self._event({"type": "message_start", "message": message}), self._event({"type": "ping"})]

    def reasoning(self, piece: str) -> list[bytes]:
        out = []
        if self.open != "thinking":
            out += self._stop()
            out.append(self._start({"type": "thinking", "thinking": "", "signature": ""}))
        out.append(self._event({"type": "content_block_delta", "index": self.index,
                                "delta": {"type": "thinking_delta", "thinking": piece}}))
        return out

    def reasoning_end(self) -> list[bytes]:
        if self.open != "thinking":
            return []
        sig = self._event({"type": "content_block_delta", "index": self.index,
                           "delta": {"type": "signature_delta", "signature": "EqQBCgIYAh" + secrets.token_hex(24)}})
        return [sig] + self._stop()

    def text(self, piece: str) -> list[bytes]:
        out = []
        if self.open != "text":
            out += self._stop()
            out.append(self._start({"type": "text", "text": ""}))
            pre, suf = _template({"type": "content_block_delta", "index": self.index,
                                  "delta": {"type": "text_delta", "text": _PH}})
            self._text_pre = b"event: content_block_delta\ndata: " + pre
            self._text_suf = suf + b"\n\n"
        out.append(self._text_pre + _jtext(piece) + self._text_suf)
        return out

    def text_end(self) -> list[bytes]:
        return self._stop()

    def tools(self, calls: list[dict[str, Any]]) -> list[bytes]:
        out = self._stop()
        for call in calls:
            out.append(self._start({"type": "tool_use", "id": new_id("toolu_", 12), "name": call["name"], "input": {}}))
            for frag in ["", *fragments(_dumps(call.get("arguments", {})))]:
                out.append(self._event({"type": "content_block_delta", "index": self.index,
                                        "delta": {"type": "input_json_delta", "partial_json": frag}}))
            out += self._stop()
        return out

    def default_finish(self, tools: bool) -> str:
        return "tool_use" if tools else "end_turn"

    def finish(self, reason: str, usage: Usage) -> list[bytes]:
        out = self._stop()
        out.append(self._event({
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": {"input_tokens": usage.prompt, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "output_tokens": usage.completion},
        }))
        out.append(self._event({"type": "message_stop"}))
        return out

    def blocked(self, usage: Usage) -> list[bytes]:
        """A refusal with no text, like the SDK's refusal_response fixture."""
        out = self.head()
        out.append(self._start({"type": "text", "text": ""}))
        out += self._stop()
        out.append(self._event({
            "type": "message_delta",
            "delta": {"stop_reason": "refusal", "stop_sequence": None,
                      "stop_details": {"type": "refusal", "category": "cyber",
                                       "explanation": "This request was refused due to policy."}},
            "usage": {"input_tokens": usage.prompt, "output_tokens": 0},
        }))
        out.append(self._event({"type": "message_stop"}))
        return out

    def error_event(self, fail_type: str | None) -> list[bytes]:
        etype = fail_type or "overloaded_error"
        msg = "Overloaded" if etype == "overloaded_error" else "Internal server error"
        return [self._event({"type": "error", "error": {"type": etype, "message": msg},
                             "request_id": new_id("req_", 12)})]

    def unary(self, text: str, reasoning: str, calls: list[dict[str, Any]], reason: str,
              usage: Usage) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if reasoning:
            content.append({"type": "thinking", "thinking": reasoning, "signature": "EqQBCgIYAh" + secrets.token_hex(24)})
        if text:
            content.append({"type": "text", "text": text})
        for c in calls:
            content.append({"type": "tool_use", "id": new_id("toolu_", 12), "name": c["name"],
                            "input": c.get("arguments", {})})
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
                "stop_reason": reason, "stop_sequence": None,
                "usage": {"input_tokens": usage.prompt, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": usage.completion}}


_ANTHROPIC_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
    504: "timeout_error", 529: "overloaded_error",
}
_ANTHROPIC_MESSAGES = {
    "authentication_error": "invalid x-api-key", "rate_limit_error": "Number of requests has exceeded your rate limit.",
    "api_error": "Internal server error", "overloaded_error": "Overloaded", "timeout_error": "Request timed out",
}


def anthropic_error(status: int, message: str | None = None, etype: str | None = None,
                    request_id: str | None = None) -> dict[str, Any]:
    etype = etype or _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error",
            "error": {"type": etype, "message": message or _ANTHROPIC_MESSAGES.get(etype, reason_phrase(status))},
            "request_id": request_id or new_id("req_", 12)}


def anthropic_models(names: list[str]) -> dict[str, Any]:
    data = [{"type": "model", "id": n, "display_name": n.replace("-", " ").title(),
             "created_at": "2025-01-01T00:00:00Z", "lifecycle": "active"} for n in names]
    return {"data": data, "has_more": False, "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None}


# --------------------------------------------------------------------------------------------- Gemini

_SAFETY_CATEGORIES = ("HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_HARASSMENT",
                      "HARM_CATEGORY_DANGEROUS_CONTENT")


def _safety_ratings(blocked: str | None = None) -> list[dict[str, Any]]:
    out = []
    for cat in _SAFETY_CATEGORIES:
        r: dict[str, Any] = {"category": cat, "probability": "NEGLIGIBLE"}
        if cat == blocked:
            r = {"category": cat, "probability": "HIGH", "blocked": True}
        out.append(r)
    return out


class GeminiWire:
    """GenerateContentResponse records: `data: {json}\\r\\n\\r\\n`, no terminator."""

    provider = "gemini"
    supports_reasoning = True
    content_type = "text/event-stream"

    def __init__(self, model: str, prompt_tokens: int) -> None:
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.response_id = secrets.token_urlsafe(16)
        pre, suf = _template(self._chunk([{"text": _PH}]))
        self._pre, self._suf = b"data: " + pre, suf + b"\r\n\r\n"

    def _usage(self, usage: Usage | None = None) -> dict[str, Any]:
        u: dict[str, Any] = {"promptTokenCount": self.prompt_tokens, "totalTokenCount": self.prompt_tokens,
                             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt_tokens}]}
        if usage is not None:
            u["candidatesTokenCount"] = usage.completion
            u["totalTokenCount"] = usage.prompt + usage.completion + usage.reasoning
            u["candidatesTokensDetails"] = [{"modality": "TEXT", "tokenCount": usage.completion}]
            if usage.reasoning:
                u["thoughtsTokenCount"] = usage.reasoning
        return u

    def _chunk(self, parts: list[dict[str, Any]], finish: str | None = None, usage: Usage | None = None,
               safety: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish:
            cand["finishReason"] = finish
        if safety is not None:
            cand["safetyRatings"] = safety
        return {"candidates": [cand], "usageMetadata": self._usage(usage), "modelVersion": self.model,
                "responseId": self.response_id}

    @staticmethod
    def _event(obj: Any) -> bytes:
        return b"data: " + _dumps(obj).encode() + b"\r\n\r\n"

    def head(self) -> list[bytes]:
        return []

    def reasoning(self, piece: str) -> list[bytes]:
        return [self._event(self._chunk([{"text": piece, "thought": True}]))]

    def reasoning_end(self) -> list[bytes]:
        return []

    def text(self, piece: str) -> list[bytes]:
        return [self._pre + _jtext(piece) + self._suf]

    def text_end(self) -> list[bytes]:
        return []

    def tools(self, calls: list[dict[str, Any]]) -> list[bytes]:
        parts = [{"functionCall": {"name": c["name"], "args": c.get("arguments", {})}} for c in calls]
        return [self._event(self._chunk(parts))] if parts else []

    def default_finish(self, tools: bool) -> str:
        return "STOP"

    def finish(self, reason: str, usage: Usage) -> list[bytes]:
        safety = _safety_ratings("HARM_CATEGORY_HATE_SPEECH" if reason == "SAFETY" else None)
        return [self._event(self._chunk([{"text": ""}], reason, usage, safety))]

    def blocked(self, usage: Usage) -> list[bytes]:
        """Prompt blocked: one record, no candidates, promptFeedback.blockReason (recording G3)."""
        return [self._event({"promptFeedback": {"blockReason": "SAFETY",
                                                "safetyRatings": _safety_ratings("HARM_CATEGORY_HATE_SPEECH")},
                             "usageMetadata": self._usage(), "modelVersion": self.model,
                             "responseId": self.response_id})]

    def error_event(self, fail_type: str | None) -> list[bytes]:
        return [self._event({"error": {"code": 500, "status": "INTERNAL",
                                       "message": "An internal error has occurred. Please retry or report in "
                                                  "https://developers.generativeai.google/guide/troubleshooting"}})]

    def unary(self, text: str, reasoning: str, calls: list[dict[str, Any]], reason: str,
              usage: Usage) -> dict[str, Any]:
        parts: list[dict[str, Any]] = []
        if reasoning:
            parts.append({"text": reasoning, "thought": True})
        if text:
            parts.append({"text": text})
        parts += [{"functionCall": {"name": c["name"], "args": c.get("arguments", {})}} for c in calls]
        safety = _safety_ratings("HARM_CATEGORY_HATE_SPEECH" if reason == "SAFETY" else None)
        return self._chunk(parts, reason, usage, safety)


_GOOGLE_STATUS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    499: ("CANCELLED", "The operation was cancelled."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in "
                      "https://developers.generativeai.google/guide/troubleshooting"),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
    529: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}


def gemini_error(status: int, message: str | None = None, gstatus: str | None = None,
                 details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    dstatus, dmsg = _GOOGLE_STATUS.get(status, ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION",
                                                reason_phrase(status)))
    err: dict[str, Any] = {"code": status, "message": message or dmsg, "status": gstatus or dstatus}
    if details is not None:
        err["details"] = details
    return {"error": err}


def gemini_bad_key(key: str) -> dict[str, Any]:
    """Like the recording gemini_googleai_unary-failure-api-key.json."""
    msg = "API key not valid. Please pass a valid API key."
    return gemini_error(400, msg, "INVALID_ARGUMENT", [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": msg},
        {"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": f"Invalid API key: {key}"},
    ])


def gemini_unknown_model(model: str, version: str, method: str) -> dict[str, Any]:
    """Like the recording gemini_googleai_unary-failure-unknown-model.json."""
    msg = (f"models/{model} is not found for API version {version}, or is not supported for {method}. "
           "Call ListModels to see the list of available models and their supported methods.")
    return gemini_error(404, msg, "NOT_FOUND", [
        {"@type": "type.googleapis.com/google.rpc.DebugInfo",
         "detail": f"[ORIGINAL ERROR] generic::not_found: {msg} [google.rpc.error_details_ext] "
                   f"{{ message: {json.dumps(msg)} }}"},
        {"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": msg},
    ])


def gemini_model(name: str) -> dict[str, Any]:
    return {"name": f"models/{name}", "version": "001", "displayName": name.replace("-", " ").title(),
            "description": "Parley fake model", "inputTokenLimit": 1048576, "outputTokenLimit": 8192,
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
            "temperature": 1.0, "maxTemperature": 2.0, "topP": 0.95, "topK": 64}


def gemini_models(names: list[str]) -> dict[str, Any]:
    return {"models": [gemini_model(n) for n in names]}


# ----------------------------------------------------------------------------------------- moderation

MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)


def moderation(model: str, inputs: list[str]) -> dict[str, Any]:
    """OpenAI moderation result per input: flagged (as harassment) when the input contains FLAGME."""
    results = []
    for text in inputs:
        flagged = "FLAGME" in text
        results.append({
            "flagged": flagged,
            "categories": {c: flagged and c == "harassment" for c in MODERATION_CATEGORIES},
            "category_scores": {c: (0.97 if flagged and c == "harassment" else 0.0001) for c in MODERATION_CATEGORIES},
            "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
        })
    return {"id": new_id("modr-", 12), "model": model, "results": results}
