"""Builds providers from settings, resolves "provider:model" references and lists models."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from chat.errors import ChatError, InvalidInput, NotConfigured
from chat.providers.base import Provider
from chat.providers.demo import DEMO_MODEL, DemoProvider
from chat.settings import Endpoint, Settings, load_dotenv_file
from chat.types import ModelInfo

__all__ = ["Registry", "Settings", "load_dotenv_file", "DEMO_REF"]

log = logging.getLogger(__name__)
KEYED_CLIENTS = 256  # users' own keys kept as clients, least recently used dropped

DEMO_REF = f"demo:{DEMO_MODEL}"
LIST_TTL = 600.0  # seconds a live model listing is reused
LIST_TIMEOUT = 3.5  # seconds allowed to each provider's listing (the SDK calls have their own 3 s)
FAILED_LIST_TTL = 60.0  # seconds before a failed listing is tried again
MAX_MODEL_NAME_CHARS = 200  # real names are under 100 (OpenRouter and Ollama ones included)
MAX_REF_CHARS = MAX_MODEL_NAME_CHARS + 64  # "provider:" before the model


def _shown(text: str, limit: int = 60) -> str:
    """A name as it may appear in a message: quoted, escaped, cut."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def check_model_name(provider: Provider, model: str) -> None:
    """Refuse a model name the provider cannot carry safely, before anything is sent or saved.

    Well-formed names are accepted whether or not the provider lists them (DEFAULT_MODEL and the
    picker take any model name); only names that are too long, hold spaces or control characters,
    climb paths ("..") or use characters outside the provider's set are refused.
    """
    label = provider.label or provider.name
    if len(model) > MAX_MODEL_NAME_CHARS:
        raise InvalidInput(
            f"That model name is {len(model):,} characters long; the limit is {MAX_MODEL_NAME_CHARS}. "
            "Pick a model from the list or type provider:model.",
            provider=provider.name,
        )
    if any(ch.isspace() or not ch.isprintable() for ch in model):
        raise InvalidInput(f"The model name {_shown(model)} contains spaces or control characters: remove them.",
                           provider=provider.name)
    if ".." in model or any(part == "." for part in model.split("/")):
        raise InvalidInput(f"{_shown(model)} is not a model name: path segments such as '..' are not allowed.",
                           provider=provider.name)
    if not provider.model_name_pattern.fullmatch(model):
        raise InvalidInput(f"{_shown(model)} is not a valid {label} model name: use {provider.model_name_hint}.",
                           provider=provider.name)


class Registry:
    """The configured providers, built once and reused (one SDK client each)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        list_timeout: float = LIST_TIMEOUT,
        ttl: float = LIST_TTL,
    ):
        self.settings = settings or Settings()
        self.providers: dict[str, Provider] = {}
        self._unconfigured: dict[str, tuple[str, str]] = {}  # name -> (label, reason)
        self._listed: dict[str, tuple[float, list[ModelInfo]]] = {}  # name -> (expires at, models)
        # Providers built with users' own keys, by (provider, sha256 of the key): never the key itself.
        self._keyed: OrderedDict[tuple[str, str], Provider] = OrderedDict()
        self._keyed_lock = threading.Lock()  # one provider (so one client) per key, even from threads
        self._clock = clock
        self._list_timeout = list_timeout
        self._ttl = ttl
        #: What to do once a missing provider is set up: the app reads its settings at start-up; a command
        #: line (python -m compare.batch) reads them on every run and says so instead.
        self.after_setup = "then restart"

    # -- building -------------------------------------------------------------------------------

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        demo_rate: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        list_timeout: float = LIST_TIMEOUT,
        ttl: float = LIST_TTL,
    ) -> Registry:
        """Build every provider the settings configure; the rest are listed by `unconfigured()` with a reason."""
        from chat.providers.anthropic import AnthropicProvider
        from chat.providers.gemini import GeminiProvider
        from chat.providers.openai import OpenAIProvider

        reg = cls(settings, clock=clock, list_timeout=list_timeout, ttl=ttl)
        s = settings

        official = (
            (OpenAIProvider, "openai", "OpenAI", s.openai_api_key, "set OPENAI_API_KEY",
             lambda key: OpenAIProvider(api_key=key, base_url=s.openai_base_url, openai_names=True,
                                        api=s.openai_api_style)),
            (AnthropicProvider, "anthropic", "Anthropic", s.anthropic_api_key, "set ANTHROPIC_API_KEY",
             lambda key: AnthropicProvider(api_key=key, base_url=s.anthropic_base_url,
                                          prompt_cache=s.anthropic_prompt_cache)),
            (GeminiProvider, "gemini", "Google Gemini", s.gemini_api_key, "set GEMINI_API_KEY (or GOOGLE_API_KEY)",
             lambda key: GeminiProvider(api_key=key, base_url=s.gemini_base_url, key_env_var=s.gemini_key_var)),
        )  # fmt: skip
        for provider_cls, name, label, key, hint, build in official:
            missing = provider_cls.sdk_missing()
            if missing:
                reg._mark_unconfigured(name, label, missing)
            elif key:
                reg.register(build(key))  # the key, narrowed to str by the test above
            else:
                reg._mark_unconfigured(name, label, hint)

        for endpoint in s.endpoints:
            reg._add_endpoint(endpoint)

        reg.register(DemoProvider(rate=demo_rate))
        return reg

    def _add_endpoint(self, e: Endpoint) -> None:
        from chat.providers.openai import OpenAIProvider, compatible_params

        missing = OpenAIProvider.sdk_missing()
        if missing:
            self._mark_unconfigured(e.name, e.label, missing)
            return
        if e.missing_key:
            self._mark_unconfigured(e.name, e.label, f"set {e.key_env}")
            return
        models = [
            ModelInfo(
                provider=e.name,
                id=m.id,
                label=m.label or m.id,
                context_window=m.context_window,
                params=compatible_params(m.id, effort=e.effort, api=e.api),  # an OpenAI reasoning name: effort
                supports_tools=True,
                vision=m.vision,
                pdf=m.pdf,
            )
            for m in e.models
        ]
        self.register(
            OpenAIProvider(
                api_key=e.api_key,
                base_url=e.base_url,
                name=e.name,
                label=e.label,
                key_env_var=e.key_env,
                models=models,
                context_window=e.context_window,
                include_usage=e.include_usage,
                official=False,
                send_effort=e.effort,
                api=e.api,
                base_url_env_var=None,
                vision=e.vision,
                pdf=e.pdf,
            )
        )

    def _mark_unconfigured(self, name: str, label: str, reason: str) -> None:
        self._unconfigured[name] = (label, reason)

    def register(self, provider: Provider) -> Provider:
        """Add (or replace) a provider by its name; tests and fakes come in through here too."""
        if not provider.name:
            raise ValueError("a provider needs a name")
        self.providers[provider.name] = provider
        self._unconfigured.pop(provider.name, None)
        self._listed.pop(provider.name, None)
        return provider

    def unconfigured(self) -> list[tuple[str, str, str]]:
        """(name, label, reason) for each known provider that cannot be used yet."""
        return [(name, label, reason) for name, (label, reason) in self._unconfigured.items()]

    @property
    def problems(self) -> tuple[str, ...]:
        """Problems found in the settings (e.g. a bad models.toml entry), for the UI to show."""
        return self.settings.problems

    # -- resolving --------------------------------------------------------------------------------

    def resolve(self, ref: str) -> tuple[Provider, ModelInfo]:
        """The provider and model info for "provider:model"; any model name is accepted for a configured provider.

        A bare model name works when exactly one known model has that id.
        """
        ref = (ref or "").strip()
        if not ref:
            raise NotConfigured("No model was chosen: pick one, written as provider:model (e.g. demo:parley-demo).")
        name, sep, model = ref.partition(":")
        if len(ref) > MAX_REF_CHARS:  # refused before any lookup, whatever the provider part says
            raise InvalidInput(f"That model name is {len(model if sep else ref):,} characters long; the limit is "
                               f"{MAX_MODEL_NAME_CHARS}. Pick a model from the list or type provider:model.")
        if sep and name in self.providers:
            if not model:
                raise NotConfigured(f"'{ref}' names no model: write it as {name}:<model>.", provider=name)
            provider = self.providers[name]
            check_model_name(provider, model)
            return provider, provider.model_info(model)
        if sep and name in self._unconfigured:
            label, reason = self._unconfigured[name]
            raise NotConfigured(f"{label} is not set up: {reason}, {self.after_setup}.", provider=name)
        matches = [info for infos in self.cached_models().values() for info in infos if info.id == ref]
        if len(matches) == 1:
            info = matches[0]
            return self.providers[info.provider], info
        known = ", ".join(sorted(self.providers))
        if len(matches) > 1:
            where = ", ".join(sorted(i.ref for i in matches))
            raise NotConfigured(f"'{ref}' is offered by several providers ({where}): use provider:model.")
        if sep:
            raise NotConfigured(f"Unknown provider '{name}' in '{ref}'. Configured providers: {known}.", provider=name)
        raise NotConfigured(f"Unknown model '{ref}': use provider:model (configured providers: {known}).")

    def resolve_with_key(self, ref: str, api_key: str | None) -> tuple[Provider, ModelInfo]:
        """Like `resolve`, but with a user's own key (kept in memory only, one client per key).

        With a key, the three standard providers work even when the server has no key for them.
        """
        api_key = (api_key or "").strip()
        if not api_key:
            return self.resolve(ref)
        name, sep, model = (ref or "").strip().partition(":")
        if not sep or not model:
            return self.resolve(ref)
        base = self.providers.get(name) or self._standard_provider(name)
        if base is None:
            return self.resolve(ref)
        check_model_name(base, model)  # before a client is built for the key
        cache_key = (name, hashlib.sha256(api_key.encode()).hexdigest())
        with self._keyed_lock:
            provider = self._keyed.get(cache_key)
            if provider is None:
                provider = base.with_api_key(api_key)
                self._keyed[cache_key] = provider
                while len(self._keyed) > KEYED_CLIENTS:
                    self._keyed.popitem(last=False)[1].retire()
            else:
                self._keyed.move_to_end(cache_key)
        return provider, provider.model_info(model)

    def _standard_provider(self, name: str) -> Provider | None:
        """A keyless template of a standard provider, for a user who brings their own key."""
        s = self.settings
        if name == "openai":
            from chat.providers.openai import OpenAIProvider

            return None if OpenAIProvider.sdk_missing() else OpenAIProvider(api_key="", base_url=s.openai_base_url,
                                                                            openai_names=True, api=s.openai_api_style)
        if name == "anthropic":
            from chat.providers.anthropic import AnthropicProvider

            return None if AnthropicProvider.sdk_missing() else AnthropicProvider(
                api_key="", base_url=s.anthropic_base_url, prompt_cache=s.anthropic_prompt_cache)
        if name == "gemini":
            from chat.providers.gemini import GeminiProvider

            return None if GeminiProvider.sdk_missing() else GeminiProvider(api_key="", base_url=s.gemini_base_url)
        return None

    @property
    def default_model(self) -> str:
        """DEFAULT_MODEL when its provider is configured, else the first real provider's first model, else the demo."""
        wanted = self.settings.default_model
        if wanted:
            try:
                provider, info = self.resolve(wanted)
                return info.ref
            except ChatError as e:  # not set up, or a malformed name: start anyway, on another model
                log.warning("DEFAULT_MODEL=%s is not usable (%s); falling back.", wanted[:MAX_REF_CHARS], e)
        for name, provider in self.providers.items():
            if name == "demo":
                continue
            curated = provider.curated()
            if curated:
                return curated[0].ref
        return DEMO_REF

    # -- listing ----------------------------------------------------------------------------------

    def cached_models(self) -> dict[str, list[ModelInfo]]:
        """Models per provider without waiting: the last live listing, or the built-in lists."""
        out: dict[str, list[ModelInfo]] = {}
        for name, provider in self.providers.items():
            listed = self._listed.get(name)
            out[name] = list(listed[1]) if listed else provider.curated()
        return out

    async def list_models(self, refresh: bool = False) -> dict[str, list[ModelInfo]]:
        """Live model lists from every configured provider at once (cached for a while); curated lists on failure."""
        now = self._clock()
        stale = [name for name in self.providers if refresh or name not in self._listed or now >= self._listed[name][0]]
        if stale:
            results = await asyncio.gather(*(self._list_one(name) for name in stale))
            now = self._clock()
            for name, models in zip(stale, results):
                if models is None:  # failed: the built-in list, tried again sooner
                    self._listed[name] = (now + FAILED_LIST_TTL, self.providers[name].curated())
                else:
                    self._listed[name] = (now + self._ttl, models)
        return self.cached_models()

    async def _list_one(self, name: str) -> list[ModelInfo] | None:
        provider = self.providers[name]
        try:
            models = await asyncio.wait_for(provider.list_models(), self._list_timeout)
        except Exception as e:  # noqa: BLE001 - any failure means "use the curated list"; logged, not hidden
            log.info("Listing models of %s failed (%s: %s); using the built-in list.", name, type(e).__name__, e)
            return None
        return models or provider.curated()

    def warm(self) -> None:
        """Import every configured SDK and build its client (blocking: call it from a thread).

        A request may already be using a client: each provider builds its client once, under a
        lock, so warming reuses it and never replaces it.
        """
        for name, provider in list(self.providers.items()):
            try:
                provider.warm()
            except Exception as e:  # a broken SDK must not stop the app; the request will say why
                log.warning("warming %s failed: %s", name, e)

    async def aclose(self) -> None:
        """Close every provider's SDK client, users' own keys' too."""
        with self._keyed_lock:
            keyed = list(self._keyed.values())
        await asyncio.gather(*(p.aclose() for p in [*self.providers.values(), *keyed]), return_exceptions=True)
