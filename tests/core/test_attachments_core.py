"""Files in messages through the real core (core.chat, core.compare, core.batch, core.conversations): the demo
provider and the fake provider server, real storage (SQLite, and PostgreSQL when TEST_DATABASE_URL is set).

Refusals leave no trace (no charge, no request, no row); accepted files are saved, reach the provider in its
own shape and come back as context of the next turn; a compare pane whose model cannot read a file says so
while the other panes run; a batch checks every named file before anything is charged."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image
from pypdf import PdfWriter

from chat.registry import Registry, Settings
from compare.pricing import PriceTable
from core.attachments import FileProblem, limits_of, read_files
from core.batch import Batches, BatchInputError
from core.chat import ChatEvent, ChatTurns, Refused, Update
from core.compare import CompareProblem, Comparisons
from core.config import AppConfig
from core.conversations import ConversationError, Conversations
from core.exports import ExportFiles
from core.ratelimit import Identity
from core.services import Services
from storage import repository as repo
from tests.fakes import Scenario

SEE = "eyes:see-1"  # reads images (models.toml: vision = true)
BLIND = "eyes:blind-1"  # text only


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def scanned_pdf() -> bytes:
    """A PDF page with no text layer (what a scanner makes, less the picture)."""
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def text_pdf(text: str = "Quarterly revenue rose 12 percent.") -> bytes:
    """A one-page PDF with a real text layer, written by hand (offsets computed)."""
    stream = f"BT /F1 12 Tf 20 100 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def write(tmp_path: Path, name: str, data: bytes) -> str:
    folder = tmp_path / uuid.uuid4().hex[:8]  # Gradio keeps each upload in a folder of its own
    folder.mkdir()
    path = folder / name
    path.write_bytes(data)
    return str(path)


def models_file(tmp_path: Path, fake_server: Any) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(
        "[[endpoint]]\n"
        'name = "eyes"\nlabel = "Eyes"\n'
        f'base_url = "{fake_server.openai_base_url}"\n'
        'key_env = "EYES_KEY"\n'
        'models = [{ id = "see-1", vision = true }, "blind-1"]\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def make_services(engine: sa.Engine, fake_server: Any, tmp_path: Path) -> Iterator[Callable[..., Services]]:
    """Services over the fake server (an endpoint with a vision model and a text-only one) and the demo."""
    built: list[Services] = []
    for model in ("see-1", "blind-1"):
        fake_server.set_scenario(model, Scenario(tokens=6))

    def make(**settings: str) -> Services:
        env = {"EYES_KEY": "test-key", "PARLEY_MODELS_FILE": str(models_file(tmp_path, fake_server)),
               "RATE_LIMIT": "1000/minute", **settings}
        services = Services.build(AppConfig.from_env(env), Registry.from_settings(Settings.from_env(env, cwd=tmp_path)), engine)
        built.append(services)
        return services

    yield make
    for services in built:
        services.close()


def owner() -> str:
    return f"user:{uuid.uuid4().hex[:8]}"


async def send(turns: ChatTurns, who: str, text: str, **kwargs: Any) -> list[ChatEvent]:
    async with aclosing(turns.send(owner=who, identity=Identity(who), text=text, **kwargs)) as events:
        return [e async for e in events]


def stored(services: Services, who: str) -> tuple[list[tuple[str, str]], int]:
    """(role, content) of the owner's messages, and how many attachments the owner has stored."""
    with services.engine.connect() as c:
        messages = c.execute(sa.text(
            "select m.role, m.content from message m join conversation c on c.id = m.conversation_id "
            "where c.owner = :o order by c.created_at, m.position"), {"o": who}).all()
        files = c.execute(sa.text("select count(*) from attachment where owner = :o"), {"o": who}).scalar_one()
    return [(r[0], r[1]) for r in messages], files


def chat_posts(fake_server: Any, model: str) -> list[Any]:
    return [r for r in fake_server.requests if r.model == model and r.path.endswith("/chat/completions")]


class Sent:
    """The chat requests the (shared) fake server receives from now on, per model."""

    def __init__(self, fake_server: Any):
        self.server = fake_server
        self.before = {m: len(chat_posts(fake_server, m)) for m in ("see-1", "blind-1")}

    def __call__(self, model: str) -> list[Any]:
        return chat_posts(self.server, model)[self.before[model]:]


class Spy:
    """Counts the limiter's charges, to prove a refusal charged nothing."""

    def __init__(self, services: Services):
        self.calls = 0
        real = services.limiter.charge

        async def charge(*args: Any, **kwargs: Any) -> Any:
            self.calls += kwargs.get("calls", 1)
            return await real(*args, **kwargs)

        services.limiter.charge = charge  # type: ignore[method-assign]  # counting wrapper over the real limiter


# -- settings and reading ---------------------------------------------------------------------------


def test_the_settings_set_the_limits_and_bad_values_are_named() -> None:
    cfg = AppConfig.from_env({"MAX_FILE_MB": "2.5", "MAX_FILES": "3", "MAX_ATTACHMENTS_MB": "4", "MAX_PDF_PAGES": "7"})
    limits = limits_of(cfg)
    assert (limits.max_file_bytes, limits.max_files, limits.max_message_bytes, limits.max_pdf_pages) == (
        int(2.5 * 1024 * 1024), 3, 4 * 1024 * 1024, 7)
    defaults = limits_of(AppConfig.from_env({}))
    assert (defaults.max_file_bytes, defaults.max_files, defaults.max_message_bytes, defaults.max_pdf_pages) == (
        20 * 1024 * 1024, 10, 50 * 1024 * 1024, 100)
    for name, value in (("MAX_FILE_MB", "lots"), ("MAX_FILES", "0"), ("MAX_PDF_PAGES", "-1"), ("MAX_ATTACHMENTS_MB", "inf")):
        with pytest.raises(ValueError, match=name):
            AppConfig.from_env({name: value})


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = write(tmp_path, "huge.png", png(400, 400) + b"\0" * 3000)
    limits = limits_of(AppConfig.from_env({"MAX_FILE_MB": "0.001"}))
    read: list[Path] = []
    real = Path.read_bytes

    def reading(self: Path) -> bytes:
        read.append(self)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", reading)
    with pytest.raises(FileProblem, match=r"huge\.png is 0\.0 MB; a file may be at most 0\.0 MB|huge\.png is"):
        read_files([big], limits)
    assert read == [], "the size is checked from the file system: a huge upload is never loaded"


# -- the chat ---------------------------------------------------------------------------------------


async def test_an_image_for_a_model_without_vision_is_refused_naming_the_models_that_can(
        make_services: Callable[..., Services], fake_server: Any, tmp_path: Path) -> None:
    services = make_services()
    spy = Spy(services)
    sent = Sent(fake_server)
    who = owner()
    events = await send(ChatTurns(services), who, "What is in this chart?", model=BLIND,
                        files=[write(tmp_path, "chart.png", png())])
    assert len(events) == 1 and isinstance(events[0], Refused) and events[0].kind == "file"
    message = events[0].message
    assert "chart.png" in message and BLIND in message and "cannot read images" in message
    assert SEE in message and "demo:parley-demo" in message, message
    assert spy.calls == 0 and sent("blind-1") == [] and stored(services, who) == ([], 0)


@pytest.mark.parametrize("case", ["too_many", "too_big", "renamed_executable", "empty", "bomb_pages"])
async def test_bad_files_are_refused_with_the_reason_and_nothing_is_charged_sent_or_saved(
        make_services: Callable[..., Services], fake_server: Any, tmp_path: Path, case: str) -> None:
    services = make_services(MAX_FILES="2", MAX_FILE_MB="0.05", MAX_PDF_PAGES="3")
    spy = Spy(services)
    sent = Sent(fake_server)
    who = owner()
    files, expected = {
        "too_many": ([write(tmp_path, f"p{i}.png", png()) for i in range(3)], "at most 2"),
        "too_big": ([write(tmp_path, "photo.png", png(2, 2) + b"\0" * 60_000)], "photo.png"),
        "renamed_executable": ([write(tmp_path, "cat.png", b"MZ\x90\x00\x03" + bytes(range(256)) * 4)], "cat.png"),
        "empty": ([write(tmp_path, "nothing.txt", b"")], "nothing.txt"),
        "bomb_pages": ([write(tmp_path, "bomb.pdf", _pages_pdf(5))], "bomb.pdf"),
    }[case]
    events = await send(ChatTurns(services), who, "Look at these", model=SEE, files=files)
    assert len(events) == 1 and isinstance(events[0], Refused) and events[0].kind == "file", events
    assert expected in events[0].message, events[0].message
    assert spy.calls == 0 and sent("see-1") == [] and stored(services, who) == ([], 0)


def _pages_pdf(pages: int) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(100, 100)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


async def test_files_are_saved_sent_and_come_back_as_context_of_the_next_turn(
        make_services: Callable[..., Services], fake_server: Any, tmp_path: Path) -> None:
    services = make_services()
    turns = ChatTurns(services)
    sent_to = Sent(fake_server)
    who = owner()
    image = png(120, 80)
    first = await send(turns, who, "Describe the chart.", model=SEE,
                       files=[write(tmp_path, "chart.png", image), write(tmp_path, "notes.md", b"# Notes\nup 12%\n")])
    last = first[-1]
    assert isinstance(last, Update) and last.result.error is None and last.conversation_id
    (request,) = sent_to("see-1")
    parts = request.json["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,") and "notes.md" in parts[2]["text"]
    messages, files = stored(services, who)
    assert messages == [("user", "Describe the chart."), ("assistant", last.result.text)] and files == 2
    detail = await services.db(repo.get_conversation, owner=who, conversation_id=last.conversation_id)
    assert [(a.name, a.mime, a.width, a.height) for a in detail.messages[0].attachments] == [
        ("chart.png", "image/png", 120, 80), ("notes.md", "text/plain", None, None)]

    # The next turn: the chat says its earlier turns had files; they are loaded and sent again.
    from chat.types import Message

    context = [Message(role="user", content="Describe the chart."), Message(role="assistant", content=last.result.text)]
    second = await send(turns, who, "And the trend?", model=SEE, context=context, shown=["Describe the chart."],
                        conversation_id=last.conversation_id, history_files=True)
    answer = second[-1]
    assert isinstance(answer, Update) and answer.conversation_id == last.conversation_id
    sent = chat_posts(fake_server, "see-1")[-1].json["messages"]
    assert [p["type"] for p in sent[0]["content"]] == ["text", "image_url", "text"]
    assert sent[0]["content"][1] == parts[1], "the stored image is the one sent the first time"
    assert sent[-1] == {"role": "user", "content": "And the trend?"}, "a message without files stays a plain string"
    assert stored(services, who)[1] == 2, "the same files are not stored twice"

    # A model without vision continues the chat: the earlier image is left out, with a note; the text file stays.
    third = await send(turns, who, "Summarise.", model=BLIND, context=[*context, Message(role="user", content="And the trend?"),
                       Message(role="assistant", content=answer.result.text)],
                       shown=["Describe the chart.", "And the trend?"], conversation_id=last.conversation_id,
                       history_files=True)
    end = third[-1]
    assert isinstance(end, Update)
    assert any("chart.png" in n and "left out" in n for n in end.notes), end.notes
    sent = chat_posts(fake_server, "blind-1")[-1].json["messages"]
    assert "image_url" not in json.dumps(sent) and "notes.md" in json.dumps(sent)


async def test_a_message_of_files_only_is_sent_and_titled_by_its_files(
        make_services: Callable[..., Services], tmp_path: Path) -> None:
    services = make_services()
    who = owner()
    events = await send(ChatTurns(services), who, "   ", model="demo:parley-demo", files=[write(tmp_path, "chart.png", png(30, 20))])
    last = events[-1]
    assert isinstance(last, Update) and last.result.error is None
    assert "chart\\.png" in last.result.text and "30×20" in last.result.text, "the demo describes what it received"
    convs = await services.db(repo.list_conversations, owner=who, limit=5, offset=0)
    assert [c.title for c in convs] == ["chart.png"]


async def test_a_pdf_without_pdf_support_goes_as_its_text_with_a_note_and_a_scan_is_refused(
        make_services: Callable[..., Services], fake_server: Any, tmp_path: Path) -> None:
    services = make_services()
    who = owner()
    events = await send(ChatTurns(services), who, "Summarise", model=BLIND, files=[write(tmp_path, "report.pdf", text_pdf())])
    last = events[-1]
    assert isinstance(last, Update) and last.result.error is None
    assert any("report.pdf went to eyes:blind-1 as its extracted text" in n for n in last.notes), last.notes
    assert "Quarterly revenue rose 12 percent" in json.dumps(chat_posts(fake_server, "blind-1")[-1].json)

    refused = await send(ChatTurns(services), who, "Summarise", model=BLIND, files=[write(tmp_path, "scan.pdf", scanned_pdf())])
    assert isinstance(refused[0], Refused) and refused[0].kind == "file"
    assert "scan.pdf" in refused[0].message and "demo:parley-demo" in refused[0].message


async def test_the_plain_text_turn_reads_no_files_and_makes_no_extra_query(
        make_services: Callable[..., Services], monkeypatch: pytest.MonkeyPatch) -> None:
    services = make_services()
    turns = ChatTurns(services)
    who = owner()
    calls: list[str] = []
    real = services._call

    def call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        calls.append(fn.__name__)
        return real(fn, kwargs)

    services._call = call  # type: ignore[method-assign]  # records every storage call, then runs it

    def no_reading(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a text-only turn must not read files")

    monkeypatch.setattr("core.attachments.read_uploads", no_reading)
    first = await send(turns, who, "hello", model=SEE)
    conv = first[-1].conversation_id if isinstance(first[-1], Update) else None
    from chat.types import Message

    await send(turns, who, "again", model=SEE, context=[Message(role="user", content="hello")], shown=["hello"],
               conversation_id=conv)
    assert "history_files" not in calls and "conversation_attachments" not in calls
    assert calls.count("start_turn") == 2


# -- compare ----------------------------------------------------------------------------------------


async def test_compare_sends_the_files_to_every_pane_and_a_pane_without_vision_says_so(
        make_services: Callable[..., Services], fake_server: Any, tmp_path: Path) -> None:
    services = make_services()
    spy = Spy(services)
    sent = Sent(fake_server)
    comparisons = Comparisons(services, PriceTable())
    items = await comparisons.compare(owner=ALICE, request=None, message="What does the chart show?",
                                      models=[SEE, BLIND, "demo:parley-demo"], files=[write(tmp_path, "chart.png", png(50, 40))])
    see, blind, demo = items
    assert see["error"] is None and see["text"] and demo["error"] is None and "chart\\.png" in demo["text"]
    assert blind["finish_reason"] == "error" and "cannot read images" in blind["error"] and SEE in blind["error"]
    # Every comparison puts its models in random panes: `position` says which pane each one had.
    assert blind["text"] == "" and sorted(i["position"] for i in items) == [0, 1, 2]
    assert sent("blind-1") == [] and len(sent("see-1")) == 1
    assert spy.calls == 2, "the pane that calls nothing is not charged"
    (detail,) = await services.db(repo.export_comparisons, owner=ALICE)
    assert [p.message.error is None for p in sorted(detail.panes, key=lambda p: p.slot)] == [i != blind["position"] for i in range(3)]
    user = await services.db(repo.get_conversation, owner=ALICE, conversation_id=str(detail.panes[0].conversation_id))
    assert [a.name for a in user.messages[0].attachments] == ["chart.png"]


async def test_compare_refuses_when_no_pane_can_read_the_files_or_a_file_is_bad(
        make_services: Callable[..., Services], fake_server: Any, tmp_path: Path) -> None:
    services = make_services(MAX_FILES="1")
    spy = Spy(services)
    sent = Sent(fake_server)
    comparisons = Comparisons(services, PriceTable())
    with pytest.raises(CompareProblem, match="cannot read images"):
        await comparisons.compare(owner=ALICE, request=None, message="Chart?", models=[BLIND, BLIND],
                                  files=[write(tmp_path, "chart.png", png())])
    with pytest.raises(CompareProblem, match="at most 1"):
        await comparisons.compare(owner=ALICE, request=None, message="Chart?", models=[SEE, BLIND],
                                  files=[write(tmp_path, "a.png", png()), write(tmp_path, "b.png", png())])
    assert spy.calls == 0 and sent("blind-1") == [] and sent("see-1") == []
    assert await services.db(repo.export_comparisons, owner=ALICE) == []


ALICE = "user:alice"


# -- batch ------------------------------------------------------------------------------------------


async def test_the_batch_tab_checks_the_prompts_files_up_front_and_refused_pairs_call_nothing(
        make_services: Callable[..., Services], fake_server: Any, tmp_path: Path) -> None:
    services = make_services()
    batches = Batches(services, PriceTable(), root=tmp_path / "runs")
    sent_to = Sent(fake_server)
    prompts = write(tmp_path, "prompts.jsonl", (
        json.dumps({"id": "c", "prompt": "What does it show?", "files": ["img/chart.png"]}) + "\n"
        + json.dumps({"id": "t", "prompt": "Just text"}) + "\n").encode())
    chart = write(tmp_path, "chart.png", png(40, 30))

    with pytest.raises(BatchInputError, match=r"prompt 'c': img/chart\.png was not uploaded"):
        await batches.prepare(prompts, [SEE, BLIND], 2, None, None)
    bad = write(tmp_path, "chart.png", b"MZ\x90\x00" * 100)
    with pytest.raises(BatchInputError, match=r"prompt 'c'.*chart\.png"):
        await batches.prepare(prompts, [SEE], 2, None, None, files=[bad])
    assert sent_to("see-1") == []

    job = await batches.prepare(prompts, [SEE, BLIND], 2, None, None, files=[chart])
    assert job.calls == 3 and job.refused == {("c", BLIND)}
    run, task = batches.start(owner(), job)
    summary = await task
    rows = {(r["prompt_id"], r["model"]): r for r in summary.rows}
    assert rows[("c", SEE)]["error"] is None and rows[("c", SEE)]["files"] == ["chart.png"]
    assert "cannot read images" in rows[("c", BLIND)]["error"] and rows[("c", BLIND)]["error_kind"] == "unsupported_file"
    assert rows[("t", BLIND)]["error"] is None and rows[("t", BLIND)]["files"] == []
    assert any("image_url" in json.dumps(r.json) for r in sent_to("see-1")) and len(sent_to("blind-1")) == 1
    await batches.end(run.id)
    batches.discard(run)


async def test_no_chosen_model_can_read_the_files_refuses_the_batch(
        make_services: Callable[..., Services], tmp_path: Path) -> None:
    batches = Batches(make_services(), PriceTable(), root=tmp_path / "runs")
    prompts = write(tmp_path, "prompts.jsonl", (json.dumps({"prompt": "?", "files": ["chart.png"]}) + "\n").encode())
    with pytest.raises(BatchInputError, match="None of the chosen models"):
        await batches.prepare(prompts, [BLIND], 1, None, None, files=[write(tmp_path, "chart.png", png())])


# -- import -----------------------------------------------------------------------------------------


async def test_an_import_rechecks_every_file(make_services: Callable[..., Services], tmp_path: Path) -> None:
    services = make_services()
    who = owner()
    events = await send(ChatTurns(services), who, "Keep this", model="demo:parley-demo",
                        files=[write(tmp_path, "chart.png", png(20, 10))])
    assert isinstance(events[-1], Update)
    conversations = Conversations(services, ExportFiles(tmp_path / "exports"))
    exported = json.loads(await services.db(repo.export_json, owner=who, conversation_id=None))

    other = owner()
    good = tmp_path / "good.json"
    good.write_text(json.dumps(exported), encoding="utf-8")
    (new_id,) = await conversations.import_file(other, good)
    opened = await conversations.open(other, new_id)
    assert [(a.name, a.width, a.height) for a in opened.messages[0].attachments] == [("chart.png", 20, 10)]

    # An edited export: the "PNG" is an executable now. The import is refused whole, naming the file.
    attachment = _first_attachment(exported)
    import base64
    import hashlib

    evil = b"MZ\x90\x00" + bytes(range(256))
    attachment.update(data=base64.b64encode(evil).decode(), sha256=hashlib.sha256(evil).hexdigest(), size=len(evil))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(exported), encoding="utf-8")
    third = owner()
    with pytest.raises(ConversationError, match="chart.png"):
        await conversations.import_file(third, bad)
    assert stored(services, third) == ([], 0)


def _first_attachment(exported: Any) -> dict[str, Any]:
    for conv in exported["conversations"]:
        for m in conv["messages"]:
            for a in m.get("attachments") or ():
                return a  # type: ignore[no-any-return]  # the export's JSON, read back
    raise AssertionError("the export carries no attachment")


def test_reading_runs_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from core import attachments

    seen: list[bool] = []
    real = attachments.read_files

    def spy(files: Any, limits: Any) -> Any:
        seen.append(threading.current_thread() is threading.main_thread())
        return real(files, limits)

    monkeypatch.setattr(attachments, "read_files", spy)
    got = asyncio.run(attachments.read_uploads([write(tmp_path, "a.png", png())], limits_of(AppConfig.from_env({}))))
    assert [a.name for a in got] == ["a.png"] and seen == [False]


async def test_a_compare_follow_up_sends_the_earlier_prompts_files_again(
        make_services: Callable[..., Services], fake_server: Any, tmp_path: Path) -> None:
    from chat.types import Params
    from core.compare import PaneInput

    services = make_services()
    comparisons = Comparisons(services, PriceTable())
    sent = Sent(fake_server)
    session: dict[str, Any] = {}
    inputs = [PaneInput(SEE, "", None), PaneInput("demo:parley-demo", "", None)]
    panes = comparisons.session_panes(session, inputs, Params(), "", False)
    files = await comparisons.read_files([write(tmp_path, "chart.png", png(30, 30))], panes)
    await comparisons.charge(None, ALICE, panes, files)
    run = comparisons.start(ALICE, "What is it?", panes, attachments=files)
    await run.run()
    # What the Compare tab keeps of the run (server-side state): the prompt with its files, and the reply.
    for i, pane in enumerate(run.panes):
        state = session["panes"][i]
        state["conversation_id"] = pane.conversation_id
        state["history"] += [{"role": "user", "content": "What is it?", "attachments": run.attachments},
                             {"role": "assistant", "content": pane.result.text}]
    follow = comparisons.session_panes(session, inputs, Params(), "", False)
    await comparisons.start(ALICE, "And its colour?", follow).run()
    first, second = sent("see-1")
    assert [p["type"] for p in second.json["messages"][0]["content"]] == ["text", "image_url"]
    assert second.json["messages"][0]["content"][1] == first.json["messages"][0]["content"][1]
    assert second.json["messages"][-1] == {"role": "user", "content": "And its colour?"}


async def test_a_turn_with_files_kept_during_an_outage_is_saved_with_them_later(
        make_services: Callable[..., Services], tmp_path: Path) -> None:
    from storage.errors import StorageUnavailable

    services = make_services()
    turns = ChatTurns(services)
    who = owner()
    real = services._call

    def down(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        raise StorageUnavailable("The database is unavailable (test).")

    services._call = down  # type: ignore[method-assign]  # every storage call fails until restored
    events = await send(turns, who, "Keep the chart", model="demo:parley-demo", files=[write(tmp_path, "chart.png", png())])
    assert isinstance(events[-1], Update) and events[-1].result.error is None and len(turns.pending) == 1
    services._call = real  # type: ignore[method-assign]  # the database is back
    assert await turns.pending.flush(who)
    messages, files = stored(services, who)
    assert [m[0] for m in messages] == ["user", "assistant"] and files == 1


async def test_stored_bytes_gives_an_owner_their_own_files_and_nobody_else(
        make_services: Callable[..., Services], tmp_path: Path) -> None:
    from core.attachments import stored_bytes

    services = make_services()
    alice, bob = owner(), owner()
    image = png(40, 30)
    events = await send(ChatTurns(services), alice, "Look.", model="demo:parley-demo", files=[write(tmp_path, "chart.png", image)])
    last = events[-1]
    assert isinstance(last, Update) and last.conversation_id
    detail = await services.db(repo.get_conversation, owner=alice, conversation_id=last.conversation_id)
    (ref,) = detail.messages[0].attachments
    aid = str(ref.id)
    mine = await stored_bytes(services, alice, [aid, "not-an-id", str(uuid.uuid4())])
    assert list(mine) == [aid], "unknown and malformed ids are left out"
    with Image.open(io.BytesIO(mine[aid])) as shown:
        assert shown.size == (40, 30)
    assert await stored_bytes(services, bob, [aid]) == {}, "another owner gets nothing"
    assert await stored_bytes(services, alice, []) == {}
