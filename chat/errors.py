"""A small typed error hierarchy; every message tells a user what to do."""

from __future__ import annotations


class ChatError(Exception):
    """Base of every failure the chat core reports. The UI catches only this."""

    #: Whether trying the same request again may succeed (used only before the first token).
    retryable: bool = False
    #: A short machine-readable kind, stored with the turn and shown in logs.
    kind: str = "error"

    def __init__(self, message: str, *, provider: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


class AuthError(ChatError):
    """The key is missing or refused."""

    kind = "auth"

    def __init__(self, message: str | None = None, *, provider: str | None = None, env_var: str | None = None,
                 pasted: bool = False):
        self.env_var = env_var
        self.pasted = pasted
        if message is None and pasted:
            # The user's own key: the server's .env has nothing to do with it.
            message = (f"The {provider or 'provider'} API key you pasted was refused: check that it is a "
                       f"{provider or 'provider'} key, copy it again whole (no spaces), and paste it once more; "
                       "or empty the key field to use the server's key, if it has one.")
        elif message is None:
            where = f"check {env_var} in your .env or environment" if env_var else "check the provider's API key"
            message = f"The {provider or 'provider'} API key was refused: {where}."
        super().__init__(message, provider=provider)


class ModelNotFound(ChatError):
    kind = "unknown_model"

    def __init__(self, model: str, *, provider: str | None = None, detail: str | None = None):
        self.model = model
        msg = f"{provider or 'The provider'} does not know the model '{model}'. Pick another model in the sidebar"
        msg += f" ({detail})." if detail else "."
        super().__init__(msg, provider=provider)


class RateLimited(ChatError):
    kind = "rate_limited"
    retryable = True

    def __init__(self, message: str | None = None, *, provider: str | None = None, retry_after: float | None = None):
        if message is None:
            wait = f" Try again in {retry_after:.0f} s." if retry_after else " Wait a moment and try again."
            message = f"{provider or 'The provider'} is rate limiting requests.{wait}"
        super().__init__(message, provider=provider, retry_after=retry_after)


class Overloaded(ChatError):
    kind = "overloaded"
    retryable = True

    def __init__(self, message: str | None = None, *, provider: str | None = None, retry_after: float | None = None):
        message = message or f"{provider or 'The provider'} is overloaded or failing right now. Try again shortly."
        super().__init__(message, provider=provider, retry_after=retry_after)


class NetworkError(ChatError):
    kind = "network"
    retryable = True

    def __init__(self, message: str | None = None, *, provider: str | None = None):
        message = message or f"Could not reach {provider or 'the provider'}: check the network or the base URL setting."
        super().__init__(message, provider=provider)


class ContextTooLong(ChatError):
    kind = "context_too_long"

    def __init__(self, message: str | None = None, *, provider: str | None = None):
        message = message or "The conversation is too long for this model. Start a new chat or pick a model with a larger context."
        super().__init__(message, provider=provider)


class SafetyBlocked(ChatError):
    kind = "safety"

    def __init__(self, message: str | None = None, *, provider: str | None = None):
        message = message or f"{provider or 'The provider'} blocked this request for safety reasons. Rephrase the message."
        super().__init__(message, provider=provider)


class BadRequest(ChatError):
    """The provider refused the request as malformed (a parameter it does not take, say)."""

    kind = "bad_request"


class StreamError(ChatError):
    """The stream failed after it started: an in-stream error event or a dropped connection."""

    kind = "stream"


class TimeoutError_(ChatError):
    kind = "timeout"
    retryable = True


def _seconds(seconds: float) -> str:
    """A wait as a person reads it: "3", "2.5", "61" (not "3.0041")."""
    return f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.1f}".removesuffix(".0")


class FirstTokenTimeout(TimeoutError_):
    kind = "first_token_timeout"

    def __init__(self, seconds: float, *, provider: str | None = None):
        """`seconds`: the user's whole wait, every attempt included."""
        self.seconds = seconds
        super().__init__(
            f"{provider or 'The provider'} sent nothing for {_seconds(seconds)} s. Try again, or pick another model.",
            provider=provider,
        )


class IdleTimeout(TimeoutError_):
    kind = "idle_timeout"
    retryable = False

    def __init__(self, seconds: float, *, provider: str | None = None):
        super().__init__(
            f"{provider or 'The provider'} stopped sending for {_seconds(seconds)} s; the reply so far is kept. Press Retry to try again.",
            provider=provider,
        )


class NotConfigured(ChatError):
    """A provider without its key, or an unknown provider name."""

    kind = "not_configured"


class InvalidInput(ChatError):
    """Input the app refuses before calling any provider (empty, too long, bad parameters)."""

    kind = "invalid_input"
