"""Provider settings read from an environment mapping and an optional models.toml; nothing is read at import."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MODELS_FILE = "models.toml"
BUILTIN_NAMES = frozenset({"openai", "anthropic", "gemini", "demo"})
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def load_dotenv_file(path: str | os.PathLike[str] = ".env", *, override: bool = False) -> bool:
    """Load KEY=value lines from a .env file into os.environ (the app calls this once at start-up).

    Returns True when a file was found. Variables already set in the environment win unless `override`.
    """
    from dotenv import load_dotenv

    p = Path(path)
    if not p.is_file():
        return False
    return bool(load_dotenv(p, override=override))


@dataclass(frozen=True)
class EndpointModel:
    """A model listed for an endpoint in models.toml."""

    id: str
    label: str | None = None
    context_window: int | None = None
    vision: bool = False  # reads images (sent as image_url parts)
    pdf: bool = False  # reads PDFs as `file` parts; otherwise a PDF goes as its extracted text


@dataclass(frozen=True)
class Endpoint:
    """An extra OpenAI-compatible endpoint from models.toml."""

    name: str
    label: str
    base_url: str
    key_env: str | None = None  # None: no key needed
    api_key: str | None = field(default=None, repr=False)
    models: tuple[EndpointModel, ...] = ()
    context_window: int | None = None
    include_usage: bool = True  # some servers reject stream_options
    effort: bool = False  # send reasoning_effort (OpenRouter, Groq and others accept it)
    api: str = "chat"  # "chat": Chat Completions; "responses": the Responses API (OpenAI-style servers that have it)
    vision: bool = False  # the default for its models: read images
    pdf: bool = False  # the default for its models: read PDFs as files

    @property
    def missing_key(self) -> bool:
        return self.key_env is not None and not self.api_key


@dataclass(frozen=True)
class Settings:
    """Everything the registry needs to build providers."""

    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    #: OPENAI_API_STYLE: "auto" (the Responses API for OpenAI's reasoning models on api.openai.com), "chat", "responses".
    openai_api_style: str = "auto"
    anthropic_api_key: str | None = field(default=None, repr=False)
    anthropic_base_url: str | None = None
    #: ANTHROPIC_PROMPT_CACHE: cache_control breakpoints on Anthropic requests (on unless "off").
    anthropic_prompt_cache: bool = True
    gemini_api_key: str | None = field(default=None, repr=False)
    gemini_key_var: str = "GEMINI_API_KEY"  # which variable the key came from, for error messages
    gemini_base_url: str | None = None
    default_model: str | None = None
    models_file: str | None = None
    endpoints: tuple[Endpoint, ...] = ()
    #: Problems found while reading settings (bad models.toml entries), shown to the user instead of crashing.
    problems: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, cwd: str | os.PathLike[str] | None = None) -> Settings:
        """Read settings from `env` (default: os.environ). models.toml is resolved against `cwd` (default: current dir)."""
        env = os.environ if env is None else env

        def get(key: str) -> str | None:
            value = env.get(key)
            value = value.strip() if isinstance(value, str) else None
            return value or None

        gemini_var = "GEMINI_API_KEY" if get("GEMINI_API_KEY") else ("GOOGLE_API_KEY" if get("GOOGLE_API_KEY") else "GEMINI_API_KEY")
        base = Path(cwd) if cwd is not None else Path.cwd()
        explicit = get("PARLEY_MODELS_FILE")
        problems: list[str] = []
        endpoints: tuple[Endpoint, ...] = ()
        models_file: str | None = None
        if explicit:
            path = Path(explicit) if Path(explicit).is_absolute() else base / explicit
            if path.is_file():
                models_file = str(path)
            else:
                problems.append(f"PARLEY_MODELS_FILE points to {path}, which does not exist.")
        elif (base / DEFAULT_MODELS_FILE).is_file():
            models_file = str(base / DEFAULT_MODELS_FILE)
        if models_file:
            endpoints, found = read_endpoints(models_file, env)
            problems.extend(found)
        style = (get("OPENAI_API_STYLE") or "auto").lower()
        if style not in _API_STYLES:
            problems.append(f"OPENAI_API_STYLE={style!r} is not one of {', '.join(_API_STYLES)}; using auto.")
            style = "auto"
        return cls(
            openai_api_key=get("OPENAI_API_KEY"),
            openai_base_url=get("OPENAI_BASE_URL"),
            openai_api_style=style,
            anthropic_api_key=get("ANTHROPIC_API_KEY"),
            anthropic_base_url=get("ANTHROPIC_BASE_URL"),
            anthropic_prompt_cache=(get("ANTHROPIC_PROMPT_CACHE") or "on").lower() not in ("off", "0", "false", "no"),
            gemini_api_key=get(gemini_var),
            gemini_key_var=gemini_var,
            gemini_base_url=get("GOOGLE_GEMINI_BASE_URL"),
            default_model=get("DEFAULT_MODEL"),
            models_file=models_file,
            endpoints=endpoints,
            problems=tuple(problems),
        )


def read_endpoints(path: str | os.PathLike[str], env: Mapping[str, str]) -> tuple[tuple[Endpoint, ...], list[str]]:
    """Parse the [[endpoint]] tables of a models.toml; bad entries are skipped and reported."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        return (), [f"{path}: could not read it ({e}); no extra endpoints were added."]
    raw = data.get("endpoint", [])
    if not isinstance(raw, list):
        return (), [f"{path}: `endpoint` must be an array of tables ([[endpoint]])."]
    endpoints: list[Endpoint] = []
    problems: list[str] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw, 1):
        where = f"{path}: endpoint #{i}"
        try:
            endpoint = _endpoint(entry, env)
        except ValueError as e:
            problems.append(f"{where}: {e}")
            continue
        if endpoint.name in seen:
            problems.append(f"{where}: the name '{endpoint.name}' is used twice; the first one is kept.")
            continue
        seen.add(endpoint.name)
        endpoints.append(endpoint)
    return tuple(endpoints), problems


def _endpoint(entry: Any, env: Mapping[str, str]) -> Endpoint:
    if not isinstance(entry, dict):
        raise ValueError("must be a table")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError("`name` must be lowercase letters, digits, '-' or '_' (it is the part before ':' in provider:model)")
    if name in BUILTIN_NAMES:
        raise ValueError(f"the name '{name}' is taken by a built-in provider; pick another")
    base_url = entry.get("base_url")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ValueError("`base_url` must be an http(s) URL, e.g. http://localhost:11434/v1")
    key_env = entry.get("key_env") or None
    if key_env is not None and not isinstance(key_env, str):
        raise ValueError("`key_env` must be the name of an environment variable, or \"\" for no key")
    context_window = entry.get("context_window")
    if context_window is not None and (not isinstance(context_window, int) or context_window <= 0):
        raise ValueError("`context_window` must be a positive integer")
    vision, pdf = _flag(entry, "vision", False), _flag(entry, "pdf", False)
    models: list[EndpointModel] = []
    for m in entry.get("models", []) or []:
        if isinstance(m, str) and m:
            models.append(EndpointModel(id=m, context_window=context_window, vision=vision, pdf=pdf))
        elif isinstance(m, dict) and isinstance(m.get("id"), str):
            models.append(EndpointModel(
                id=m["id"], label=m.get("label"), context_window=m.get("context_window", context_window),
                vision=_flag(m, "vision", vision, f"model '{m['id']}': "), pdf=_flag(m, "pdf", pdf, f"model '{m['id']}': "),
            ))
        else:
            raise ValueError("`models` must be a list of model names (or tables with an `id`)")
    api_key = (env.get(key_env) or "").strip() or None if key_env else None
    return Endpoint(
        name=name,
        label=str(entry.get("label") or name),
        base_url=base_url.rstrip("/"),
        key_env=key_env,
        api_key=api_key,
        models=tuple(models),
        context_window=context_window,
        include_usage=bool(entry.get("include_usage", True)),
        effort=bool(entry.get("effort", False)),
        api=_api(entry),
        vision=vision,
        pdf=pdf,
    )


_API_STYLES = ("auto", "chat", "responses")  # chat.providers.openai.API_STYLES (no SDK import here)


def _api(entry: dict[str, Any]) -> str:
    """An endpoint's `api`: "chat" (default) or "responses"."""
    api = entry.get("api", "chat")
    if api not in ("chat", "responses"):
        raise ValueError('`api` must be "chat" (Chat Completions, the default) or "responses" (the Responses API)')
    return str(api)


def _flag(table: dict[str, Any], key: str, default: bool, where: str = "") -> bool:
    """A true/false setting; anything else is refused (a quoted "false" must not turn vision on)."""
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{where}`{key}` must be true or false")
    return value
