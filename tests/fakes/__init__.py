"""Local fake servers for OpenAI Chat Completions, Anthropic Messages and Gemini streamGenerateContent.

    from tests.fakes import FakeServer, Scenario
    with FakeServer(api_key="test-key") as srv:
        srv.set_scenario("m", Scenario(tokens=5, rate=50))
        ... point an SDK at srv.openai_base_url / srv.anthropic_base_url / srv.gemini_base_url ...

See tests/fakes/README.md for every knob and the built-in model names.
"""

from .scenarios import DEFAULT_MODELS, FIXTURES_DIR, NAMED, Scenario, builtin_scenario, default_tokens
from .server import FakeServer, RecordedRequest, StreamRecord

__all__ = [
    "DEFAULT_MODELS",
    "FIXTURES_DIR",
    "NAMED",
    "FakeServer",
    "RecordedRequest",
    "Scenario",
    "StreamRecord",
    "builtin_scenario",
    "default_tokens",
]
