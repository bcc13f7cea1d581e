"""Files in messages, on the wire: the exact JSON each provider receives, through the real SDKs against tests/fakes.

Images, PDFs and text files go to OpenAI (and compatible endpoints), Anthropic and Gemini in each vendor's
documented shape; the bodies are read back from the fake server as the SDK wrote them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from chat.errors import BadRequest, RateLimited
from chat.providers import _attachments as files
from chat.providers.anthropic import AnthropicProvider
from chat.providers.anthropic import reads as claude_reads
from chat.providers.base import Provider
from chat.providers.demo import DEMO_MODEL, DemoProvider, escape_inline
from chat.providers.gemini import GeminiProvider
from chat.providers.openai import OpenAIProvider
from chat.providers.openai import reads_files as openai_reads
from chat.registry import Registry
from chat.settings import Settings
from chat.types import PDF_MIME, TEXT_MIME, Attachment, Message, Params, TextDelta
from tests.fakes import FakeServer, Scenario

PARAMS = Params(max_tokens=64)
NOTES = "# Notes\n\nRevenue grew 12%.\n"
PDF_TEXT = "Quarterly report\nRevenue grew 12% in Q3."


# -- files -----------------------------------------------------------------------------------------


def png(width: int, height: int, seed: int = 7) -> bytes:
    """A PNG of noise (small ones: their base64 holds '+' and '/', so Gemini's URL-safe alphabet shows on
    the wire) or of a gradient (big ones, quick to encode)."""
    if width * height > 10_000:
        img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    else:
        img = Image.frombytes("RGB", (width, height), random.Random(seed).randbytes(width * height * 3))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def pdf_bytes() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def attachment(name: str, mime: str, data: bytes, **fields: Any) -> Attachment:
    return Attachment(name=name, mime=mime, data=data, sha256=hashlib.sha256(data).hexdigest(), size=len(data), **fields)


def image(width: int = 6, height: int = 4, name: str = "chart.png") -> Attachment:
    return attachment(name, "image/png", png(width, height), width=width, height=height)


def pdf(text: str | None = PDF_TEXT) -> Attachment:
    return attachment("paper.pdf", PDF_MIME, pdf_bytes(), pages=1, text=text)


def text_file() -> Attachment:
    return attachment("notes.md", TEXT_MIME, NOTES.encode(), text=NOTES)


IMAGE, PDF, TEXT = image(), pdf(), text_file()
B64_IMAGE = base64.b64encode(IMAGE.data).decode()
B64_PDF = base64.b64encode(PDF.data).decode()
# text_block's shape: a labelled fence (chat.attachments).
NOTES_BLOCK = "File: notes.md\n```md\n" + NOTES + "\n```"
PDF_BLOCK = "File: paper.pdf (text extracted from the PDF)\n```\n" + PDF_TEXT + "\n```"


def ask(*atts: Attachment, text: str = "What is in these?") -> list[Message]:
    return [Message(role="system", content="be brief"), Message(role="user", content=text, attachments=atts)]


# -- the server and the providers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def srv() -> Iterator[FakeServer]:
    """A fake server of this module's own, so each test reads exactly the request it caused."""
    with FakeServer(api_key=None) as server:  # any key: compatible endpoints without one send a placeholder
        for model in ("gpt-4.1", "gpt-3.5-turbo", "claude-sonnet-4-6", "claude-3-opus-20240229"):
            server.set_scenario(model, Scenario(tokens=3))
        yield server


@pytest.fixture(autouse=True)
def _forget(srv: FakeServer) -> None:
    srv.clear()


def openai(srv: FakeServer, **kw: Any) -> OpenAIProvider:
    """Official OpenAI's rules (max_completion_tokens, its model families) at the fake's address."""
    return OpenAIProvider(api_key="test-key", base_url=srv.openai_base_url, official=True, **kw)


def compatible(srv: FakeServer, **kw: Any) -> OpenAIProvider:
    return OpenAIProvider(api_key="test-key", base_url=srv.openai_base_url, name="local", label="Local", **kw)


async def send(provider: Provider, model: str, messages: list[Message], params: Params = PARAMS) -> str:
    """Stream one reply through the real SDK; the reply's text."""
    try:
        events = [e async for e in provider.stream(model, messages, params)]
    finally:
        await provider.aclose()
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def posted(srv: FakeServer) -> Any:
    generation = [r for r in srv.requests if r.method == "POST"]
    assert len(generation) == 1, [r.path for r in srv.requests]
    return generation[0]


def body(srv: FakeServer) -> Any:
    return posted(srv).json


def decode_png(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


# -- OpenAI ----------------------------------------------------------------------------------------


async def test_openai_receives_an_image_url_a_file_part_and_a_fenced_text_part(srv):
    await send(openai(srv), "gpt-4.1", ask(IMAGE, PDF, TEXT))
    sent = body(srv)
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + B64_IMAGE}},
                {"type": "file", "file": {"filename": "paper.pdf", "file_data": "data:application/pdf;base64," + B64_PDF}},
                {"type": "text", "text": NOTES_BLOCK},
            ],
        },
    ]
    assert sent["model"] == "gpt-4.1" and sent["max_completion_tokens"] == 64


async def test_a_message_without_files_is_sent_exactly_as_before(srv, monkeypatch):
    def no_files(*args: Any) -> Any:
        raise AssertionError("text-only requests must not go through the attachment path")

    monkeypatch.setattr(files, "prepare", no_files)
    await send(openai(srv), "gpt-4.1", [Message(role="user", content="hi")])
    assert body(srv)["messages"] == [{"role": "user", "content": "hi"}]


async def test_openai_images_are_fitted_to_2048_px_before_sending(srv):
    await send(openai(srv), "gpt-4.1", ask(image(3000, 1000)))
    url = body(srv)["messages"][1]["content"][1]["image_url"]["url"]
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    width, height = decode_png(base64.b64decode(url[len(prefix):]))
    assert width == 2048 and height in (682, 683)  # 3000×1000 scaled to a 2048-px long edge


async def test_a_compatible_endpoint_gets_a_pdf_as_its_extracted_text(srv):
    await send(compatible(srv, vision=True), "gpt-test", ask(IMAGE, PDF, TEXT))
    assert body(srv)["messages"][1]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + B64_IMAGE}},
        {"type": "text", "text": PDF_BLOCK},
        {"type": "text", "text": NOTES_BLOCK},
    ]
    assert body(srv)["max_tokens"] == 64  # a compatible server's parameter name


async def test_models_toml_vision_and_pdf_reach_the_wire(srv, tmp_path):
    (tmp_path / "models.toml").write_text(
        "[[endpoint]]\n"
        'name = "local"\n'
        f'base_url = "{srv.openai_base_url}"\n'
        'key_env = ""\n'
        'models = ["gpt-test-plain", { id = "gpt-test-reader", vision = true, pdf = true }]\n'
    )
    registry = Registry.from_settings(Settings.from_env({}, cwd=tmp_path))
    provider, reader = registry.resolve("local:gpt-test-reader")
    _, plain = registry.resolve("local:gpt-test-plain")
    assert (reader.vision, reader.pdf, plain.vision, plain.pdf) == (True, True, False, False)
    await send(provider, "gpt-test-reader", ask(PDF))
    assert body(srv)["messages"][1]["content"][1] == {
        "type": "file", "file": {"filename": "paper.pdf", "file_data": "data:application/pdf;base64," + B64_PDF},
    }


async def test_an_image_for_a_model_without_vision_becomes_a_note(srv):
    # An image from earlier in the chat, after switching to a text-only model: a note, not a 400.
    history = [
        Message(role="user", content="look", attachments=(IMAGE,)),
        Message(role="assistant", content="A chart."),
        Message(role="user", content="thanks"),
    ]
    await send(openai(srv), "gpt-3.5-turbo", history)
    assert body(srv)["messages"][0]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "text", "text": "[chart.png (PNG image, 6×4 px, " + _size(IMAGE) + ") was not sent: "
                                 "gpt-3.5-turbo does not read images.]"},
    ]


def _size(att: Attachment) -> str:
    from chat.attachments import format_size

    return format_size(att.size)


# -- Anthropic -------------------------------------------------------------------------------------


async def test_anthropic_receives_image_and_document_blocks_before_the_text(srv):
    await send(AnthropicProvider(api_key="test-key", base_url=srv.anthropic_base_url, prompt_cache=False), "claude-sonnet-4-6",
               ask(IMAGE, PDF, TEXT))
    sent = body(srv)
    assert sent["system"] == "be brief"
    assert sent["messages"] == [{
        "role": "user",
        "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64_IMAGE}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": B64_PDF},
             "title": "paper.pdf"},
            {"type": "text", "text": NOTES_BLOCK},
            {"type": "text", "text": "What is in these?"},
        ],
    }]


async def test_anthropic_images_fit_1568_px_and_its_pixel_budget(srv):
    await send(AnthropicProvider(api_key="test-key", base_url=srv.anthropic_base_url, prompt_cache=False), "claude-haiku-4-5",
               ask(image(3000, 1000), image(2000, 2000, name="square.png")))
    blocks = body(srv)["messages"][0]["content"]
    wide, square = (decode_png(base64.b64decode(b["source"]["data"])) for b in blocks[:2])
    assert 1567 <= wide[0] <= 1568 and 522 <= wide[1] <= 523  # 3000×1000 to a 1568-px long edge
    assert max(square) <= 1568 and square[0] * square[1] <= 1_200_000 and square[0] == square[1]


async def test_claude_3_models_read_images_but_get_pdfs_as_text(srv):
    await send(AnthropicProvider(api_key="test-key", base_url=srv.anthropic_base_url, prompt_cache=False), "claude-3-opus-20240229",
               ask(IMAGE, PDF, text=""))
    assert body(srv)["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64_IMAGE}},
        {"type": "text", "text": PDF_BLOCK},
    ]


# -- Gemini ----------------------------------------------------------------------------------------


async def test_gemini_receives_inline_data_parts_in_url_safe_base64(srv):
    await send(GeminiProvider(api_key="test-key", base_url=srv.gemini_base_url), "gemini-test", ask(IMAGE, PDF, TEXT))
    sent = body(srv)
    assert sent["systemInstruction"]["parts"] == [{"text": "be brief"}]
    [content] = sent["contents"]
    assert content["role"] == "user"
    image_part, pdf_part, text_part, prompt_part = content["parts"]
    assert image_part == {"inlineData": {"data": image_part["inlineData"]["data"], "mime_type": "image/png"}}
    assert pdf_part == {"inlineData": {"data": pdf_part["inlineData"]["data"], "mime_type": "application/pdf"}}
    # The SDK writes bytes in the URL-safe alphabet: decoded as such they are the files, byte for byte.
    wire_image = image_part["inlineData"]["data"]
    assert "+" in B64_IMAGE or "/" in B64_IMAGE  # so the alphabets differ for this image
    assert wire_image != B64_IMAGE and not set("+/") & set(wire_image)
    assert base64.urlsafe_b64decode(wire_image) == IMAGE.data
    assert base64.urlsafe_b64decode(pdf_part["inlineData"]["data"]) == PDF.data
    assert text_part == {"text": NOTES_BLOCK}
    assert prompt_part == {"text": "What is in these?"}


async def test_gemini_keeps_within_its_inline_limit_by_sending_older_pdfs_as_text(srv, monkeypatch):
    # The documented limit is 20 MB; a small one here shows the rule without megabytes of test data.
    monkeypatch.setattr(files, "GEMINI", files.Rules(3072, None, len(B64_PDF) + 200, "the test limit"))
    history = [
        Message(role="user", content="first", attachments=(PDF,)),
        Message(role="assistant", content="ok"),
        Message(role="user", content="second", attachments=(PDF,)),
    ]
    await send(GeminiProvider(api_key="test-key", base_url=srv.gemini_base_url), "gemini-test", history)
    older, _, newer = body(srv)["contents"]
    assert older["parts"] == [{"text": PDF_BLOCK}, {"text": "first"}]
    assert base64.urlsafe_b64decode(newer["parts"][0]["inlineData"]["data"]) == PDF.data


async def test_files_over_the_request_limit_are_refused_before_sending(srv, monkeypatch):
    monkeypatch.setattr(files, "GEMINI", files.Rules(3072, None, 100, "the test limit"))
    with pytest.raises(BadRequest, match="over Google Gemini's limit of the test limit"):
        await send(GeminiProvider(api_key="test-key", base_url=srv.gemini_base_url), "gemini-test", ask(PDF))
    assert not [r for r in srv.requests if r.method == "POST"]


# -- off the event loop ----------------------------------------------------------------------------


def test_dumps_writes_exactly_what_json_dumps_would():
    blob = files.Blob(png(300, 200) * 7, "data:image/png;base64,")  # several base64 chunks
    body = {"messages": [{"content": [{"text": 'quote " backslash \\ nul \x00 é 😀', "url": blob}]}], "n": [1, None, True]}
    expected = json.dumps(files.materialize(body), ensure_ascii=False, separators=(",", ":")).encode()
    pieces = files.dumps(body)
    assert b"".join(pieces) == expected
    assert len(pieces) > 3 and max(len(p) for p in pieces) <= 4 * files._CHUNK // 3 + 64


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_body_with_files_goes_out_in_pieces_as_one_plain_request(srv, kind):
    provider = openai(srv) if kind == "openai" else AnthropicProvider(api_key="test-key",
                                                                      base_url=srv.anthropic_base_url)
    model = "gpt-4.1" if kind == "openai" else "claude-sonnet-4-6"
    messages = ask(attachment("big.pdf", PDF_MIME, PDF.data + bytes(3_000_000), pages=1))
    expected = provider.request(model, messages, PARAMS)
    await send(provider, model, messages)
    request = posted(srv)
    assert request.headers["content-type"] == "application/json"
    assert "transfer-encoding" not in request.headers  # Content-Length, not chunked: any server takes it
    assert request.json == expected  # the SDK's own request, byte for byte in meaning
    assert request.headers["authorization"] == "Bearer test-key"  # the SDK's auth, as on the plain path
    if kind == "anthropic":
        assert request.headers["anthropic-version"]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_errors_on_the_files_path_are_mapped_as_on_the_plain_one(srv, kind):
    provider = openai(srv) if kind == "openai" else AnthropicProvider(api_key="test-key",
                                                                      base_url=srv.anthropic_base_url)
    with pytest.raises(RateLimited):
        await send(provider, "fail-429-always", ask(TEXT))


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_files_are_prepared_in_a_worker_thread(srv, monkeypatch, kind):
    threads: list[threading.Thread] = []
    real = files.prepare

    def spy(*args: Any) -> Any:
        threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(files, "prepare", spy)
    provider: Provider = {
        "openai": lambda: openai(srv),
        "anthropic": lambda: AnthropicProvider(api_key="test-key", base_url=srv.anthropic_base_url, prompt_cache=False),
        "gemini": lambda: GeminiProvider(api_key="test-key", base_url=srv.gemini_base_url),
    }[kind]()
    model = {"openai": "gpt-4.1", "anthropic": "claude-sonnet-4-6", "gemini": "gemini-test"}[kind]
    await send(provider, model, ask(IMAGE))
    assert threads and all(t is not threading.main_thread() for t in threads)
    assert len(body(srv)["messages" if kind != "gemini" else "contents"]) >= 1


# -- the documented request examples ---------------------------------------------------------------


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and types, strings reduced to their type."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


DATA = "iVBORw0KGgo..."  # placeholder base64 in the examples below
OPENAI_DOC_IMAGE = {  # platform.openai.com/docs/guides/images-vision ("Passing a Base64 encoded image")
    "role": "user",
    "content": [
        {"type": "text", "text": "what's in this image?"},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{DATA}"}},
    ],
}
OPENAI_DOC_PDF = {  # platform.openai.com/docs/guides/pdf-files ("Base64-encoded files")
    "role": "user",
    "content": [
        {"type": "file", "file": {"filename": "draconomicon.pdf", "file_data": f"data:application/pdf;base64,{DATA}"}},
        {"type": "text", "text": "What is the first dragon in the book?"},
    ],
}
ANTHROPIC_DOC = {  # docs.anthropic.com/en/docs/build-with-claude/vision and .../pdf-support
    "role": "user",
    "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": DATA}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": DATA},
         "title": "paper.pdf"},
        {"type": "text", "text": "Describe this image."},
    ],
}
GEMINI_DOC_PART = {"inlineData": {"data": DATA, "mime_type": "image/jpeg"}}  # ai.google.dev image-understanding


async def test_the_wire_matches_the_documented_examples(srv):
    await send(openai(srv), "gpt-4.1", ask(IMAGE, PDF))
    image_part, pdf_part = body(srv)["messages"][1]["content"][1:]
    assert shape(image_part) == shape(OPENAI_DOC_IMAGE["content"][1])
    assert shape(pdf_part) == shape(OPENAI_DOC_PDF["content"][0])
    srv.clear()
    await send(AnthropicProvider(api_key="test-key", base_url=srv.anthropic_base_url, prompt_cache=False), "claude-sonnet-4-6",
               ask(IMAGE, PDF))
    assert shape(body(srv)["messages"][0]) == shape(ANTHROPIC_DOC)
    srv.clear()
    await send(GeminiProvider(api_key="test-key", base_url=srv.gemini_base_url), "gemini-test", ask(IMAGE))
    assert shape(body(srv)["contents"][0]["parts"][0]) == shape(GEMINI_DOC_PART)


def test_the_parts_validate_against_the_sdk_request_types():
    """The SDKs' own TypedDicts (openai's user message, anthropic's block types) accept the parts."""
    from anthropic.types import DocumentBlockParam, ImageBlockParam, TextBlockParam
    from openai.types.chat import ChatCompletionUserMessageParam
    from pydantic import TypeAdapter

    from chat.providers.anthropic import to_anthropic_messages
    from chat.providers.openai import to_openai_messages

    [_, user] = to_openai_messages(ask(IMAGE, PDF, TEXT))
    # Parts are validated lazily (an Iterable field): reading them runs the validation.
    validated = TypeAdapter(ChatCompletionUserMessageParam).validate_python(user)
    assert [dict(p) for p in validated["content"]] == user["content"]
    [message] = to_anthropic_messages(ask(IMAGE, PDF, TEXT))
    # Block by block: validating the whole MessageParam union panics inside pydantic-core (an upstream bug).
    block_types = {"image": ImageBlockParam, "document": DocumentBlockParam, "text": TextBlockParam}
    for block in message["content"]:
        assert TypeAdapter(block_types[block["type"]]).validate_python(block) == block


# -- model flags -----------------------------------------------------------------------------------


def test_curated_models_say_what_they_read():
    official = OpenAIProvider(api_key="k")
    assert all(m.vision and m.pdf for m in official.curated())
    assert {m: openai_reads(m) for m in ("gpt-4o", "gpt-5-nano", "o3", "o1-mini", "o3-mini", "gpt-3.5-turbo")} == {
        "gpt-4o": True, "gpt-5-nano": True, "o3": True, "o1-mini": False, "o3-mini": False, "gpt-3.5-turbo": False,
    }
    assert official.model_info("gpt-4o").vision and not official.model_info("gpt-3.5-turbo").vision
    claude = AnthropicProvider(api_key="k")
    assert all(m.vision and m.pdf for m in claude.curated())
    assert claude_reads("claude-3-haiku-20240307") == (True, False)
    assert claude_reads("claude-3-5-sonnet-20241022") == (True, True)
    assert claude_reads("claude-2.1") == (False, False)
    assert claude.model_info("claude-opus-4-1").pdf
    gemini = GeminiProvider(api_key="k")
    assert all(m.vision and m.pdf for m in gemini.curated())
    assert gemini.model_info("gemini-2.0-flash").vision and not gemini.model_info("gemma-3-27b-it").vision
    demo = DemoProvider(rate=0)
    assert all(m.vision and m.pdf for m in demo.curated()) and demo.model_info("anything").vision
    # A compatible endpoint reads nothing unless models.toml says so.
    assert not OpenAIProvider(api_key="k", base_url="http://localhost:11434/v1").model_info("llava").vision


def test_models_toml_flags_are_parsed_and_bad_ones_refused(tmp_path):
    (tmp_path / "models.toml").write_text(
        "[[endpoint]]\n"
        'name = "vis"\nbase_url = "http://localhost:1/v1"\nkey_env = ""\nvision = true\n'
        'models = ["a", { id = "b", pdf = true }, { id = "c", vision = false }]\n'
        "[[endpoint]]\n"
        'name = "bad"\nbase_url = "http://localhost:2/v1"\nkey_env = ""\nmodels = [{ id = "x", vision = "yes" }]\n'
    )
    settings = Settings.from_env({}, cwd=tmp_path)
    [endpoint] = settings.endpoints
    assert [(m.id, m.vision, m.pdf) for m in endpoint.models] == [("a", True, False), ("b", True, True), ("c", False, False)]
    assert any("model 'x': `vision` must be true or false" in p for p in settings.problems)
    registry = Registry.from_settings(settings)
    # The endpoint's default covers a model typed by name, not listed in the file.
    assert registry.resolve("vis:typed-model")[1].vision


# -- the demo model --------------------------------------------------------------------------------


async def test_the_demo_names_each_file_its_type_size_and_pixels():
    from chat.attachments import describe

    odd = image(name="<img src=x onerror=alert(1)>.png")
    reply = await send(DemoProvider(rate=0), DEMO_MODEL, ask(IMAGE, PDF, TEXT, odd), Params())
    assert "You attached 4 files" in reply
    for att in (IMAGE, PDF, TEXT, odd):
        assert f"- {escape_inline(describe(att))}\n" in reply
    assert "chart\\.png &#40;PNG image, 6×4 px," in reply
    assert "paper\\.pdf &#40;PDF, 1 page," in reply
    assert "notes\\.md &#40;" in reply
    assert "<img" not in reply  # a file name cannot inject markup


async def test_the_demo_reply_without_files_is_unchanged():
    from chat.providers.demo import demo_reply

    reply = await send(DemoProvider(rate=0), DEMO_MODEL, [Message(role="user", content="hello")], Params())
    assert reply == demo_reply("hello") and "attached" not in reply


def test_prepare_is_pure_on_text_only_messages():
    assert not files.has_attachments(ask())
    assert files.prepare(ask(), OpenAIProvider(api_key="k").model_info("gpt-4.1"), files.OPENAI, "OpenAI") == {}

