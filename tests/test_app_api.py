"""The launched app through gradio_client, backed by the fake provider servers."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa
from gradio_client import Client

from storage.models import Conversation, Message
from tests.apphelpers import app_env, in_process_app
from tests.fakes import Scenario


@pytest.fixture(scope="module")
def app(fake_server, tmp_path_factory):
    db = tmp_path_factory.mktemp("appdb") / "parley.db"
    with in_process_app(app_env(fake_server, f"sqlite:///{db}")) as (url, services):
        yield url, services


def answer_of(messages) -> str:
    """The answer bubble's text (bubbles with a metadata title are reasoning, notices, metrics)."""
    return "".join(m["content"] for m in messages if not (m.get("metadata") or {}).get("title") and isinstance(m["content"], str))


def titles_of(messages) -> list[str]:
    return [(m.get("metadata") or {}).get("title") for m in messages if (m.get("metadata") or {}).get("title")]


def rows(services, owner_like: str | None = None):
    with services.engine.connect() as c:
        convs = c.execute(sa.select(Conversation.__table__)).mappings().all()
        msgs = c.execute(sa.select(Message.__table__).order_by(Message.__table__.c.position)).mappings().all()
    return convs, msgs


def test_api_lists_chat_with_documented_parameters(app):
    url, _ = app
    client = Client(url, verbose=False)
    params = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/chat"]["parameters"]
    names = [p["parameter_name"] for p in params]
    assert names[:3] == ["message", "model", "system_prompt"]
    assert all(p["parameter_has_default"] for p in params[1:]), "every input but message has a default"


def test_streaming_reply_is_coalesced_and_saved_with_metrics(app, fake_server):
    url, services = app
    fake_server.set_scenario("stream-a", Scenario(text=" ".join(f"w{i}" for i in range(60)) + " ", tokens=60, rate=200))
    client = Client(url, verbose=False)
    job = client.submit(message="Tell me a story", model="openai:stream-a", system_prompt="Be brief.", api_name="/chat")
    outputs = [answer_of(o) for o in job]
    final = job.result()
    assert answer_of(final).split() == [f"w{i}" for i in range(60)]
    grown = [o for o in outputs if o]
    assert len(grown) >= 2, "the reply streamed in several updates"
    assert len(grown) < 60, "updates were coalesced, not one per token"
    assert any("first token" in t for t in titles_of(final)), "the metrics line is shown"

    sent = [r for r in fake_server.requests if r.model == "stream-a"][-1]
    assert sent.json["messages"][0] == {"role": "system", "content": "Be brief."}

    convs, msgs = rows(services)
    conv = next(c for c in convs if c["title"].startswith("Tell me a story"))
    mine = [m for m in msgs if m["conversation_id"] == conv["id"]]
    assert [m["role"] for m in mine] == ["user", "assistant"]
    reply = mine[1]
    assert reply["finish_reason"] == "stop" and reply["provider"] == "openai" and reply["model"] == "stream-a"
    assert reply["content"].split()[-1] == "w59"
    assert reply["ttft_ms"] is not None and reply["duration_ms"] >= reply["ttft_ms"]
    assert reply["output_tokens"] == 60 and reply["input_tokens"] > 0
    assert conv["system_prompt"] == "Be brief."


def test_follow_up_continues_the_same_conversation_with_history(app, fake_server):
    url, services = app
    client = Client(url, verbose=False)
    client.predict(message="first question", model="anthropic:echo", system_prompt="", api_name="/chat")
    second = client.predict(message="second question", model="anthropic:echo", system_prompt="", api_name="/chat")
    assert "second question" in answer_of(second)
    last = [r for r in fake_server.requests if r.provider == "anthropic" and r.model == "echo"][-1]
    contents = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in last.json["messages"]]
    assert contents[0] == "first question" and contents[-1] == "second question"
    assert len(contents) == 3, "history: user, assistant, user"

    convs, msgs = rows(services)
    conv = next(c for c in convs if c["title"].startswith("first question"))
    assert [m["position"] for m in msgs if m["conversation_id"] == conv["id"]] == [0, 1, 2, 3]


def test_two_clients_get_separate_conversations_and_owners(app):
    url, services = app
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    a.predict(message="alpha secret", model="gemini:gemini-test", system_prompt="", api_name="/chat")
    b.predict(message="bravo secret", model="gemini:gemini-test", system_prompt="", api_name="/chat")
    convs, _ = rows(services)
    ca = next(c for c in convs if c["title"] == "alpha secret")
    cb = next(c for c in convs if c["title"] == "bravo secret")
    assert ca["owner"] != cb["owner"]
    assert ca["owner"].startswith("session:") and cb["owner"].startswith("session:")


def test_failing_provider_gives_a_notice_and_keeps_partial_text(app):
    url, services = app
    client = Client(url, verbose=False)
    final = client.predict(message="will break", model="openai:drop-after-5", system_prompt="", api_name="/chat")
    text = answer_of(final)
    assert len(text.split()) == 5, "the five tokens before the drop stay"
    notices = [t for t in titles_of(final) if t.startswith("⚠️")]
    assert notices and "cut off" in " ".join(m["content"] for m in final if m.get("metadata")).lower()
    assert "Traceback" not in str(final)

    convs, msgs = rows(services)
    conv = next(c for c in convs if c["title"] == "will break")
    reply = [m for m in msgs if m["conversation_id"] == conv["id"] and m["role"] == "assistant"][0]
    assert reply["finish_reason"] == "error" and reply["content"] == text and reply["error"]


def test_bad_inputs_are_refused_before_any_provider_call(app, fake_server):
    url, _ = app
    client = Client(url, verbose=False)
    before = len(fake_server.requests)
    empty = client.predict(message="   ", model="openai:gpt-test", system_prompt="", api_name="/chat")
    assert "empty" in str(empty).lower()
    unknown = client.predict(message="hi", model="nosuch:model", system_prompt="", api_name="/chat")
    assert "nosuch" in str(unknown)
    # The bounds the sliders read from Params refuse it with a notice naming the parameter and its range.
    hot = client.predict(message="hi", model="openai:gpt-test", system_prompt="", temperature=9.0, api_name="/chat")
    assert "temperature" in str(hot) and "2" in str(hot) and "not sent" in str(hot).lower()
    huge = client.predict(message="hi", model="openai:gpt-test", system_prompt="", max_tokens=10**9, api_name="/chat")
    assert "max_tokens" in str(huge) and "not sent" in str(huge).lower()
    assert len(fake_server.requests) == before, "no provider call for refused input"


def test_default_model_is_the_demo_without_keys(fake_server, tmp_path):
    env = app_env(fake_server, f"sqlite:///{tmp_path / 'd.db'}")
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
        env.pop(key)
    with in_process_app(env) as (url, services):
        assert services.registry.default_model.startswith("demo:")
        client = Client(url, verbose=False)
        reply = client.predict(message="hello demo", api_name="/chat")
        assert "demo" in answer_of(reply).lower() and "hello demo" in answer_of(reply)


def test_tools_run_in_a_chat_turn_are_shown_stored_and_restored(app, fake_server):
    url, services = app
    for name, provider in (("calc-openai", "openai"), ("calc-anthropic", "anthropic"), ("calc-gemini", "gemini")):
        fake_server.set_scenario(name, Scenario(
            tool_calls=[{"name": "calculator", "arguments": {"expression": "6*7"}}],
            then=Scenario(text="The answer is 42.", tokens=4),
        ))
        client = Client(url, verbose=False)
        final = client.predict(message=f"what is 6 times 7 ({provider})?", model=f"{provider}:{name}",
                               system_prompt="", tools=True, api_name="/chat")
        assert "The answer is 42." in answer_of(final)
        blocks = [m for m in final if (m.get("metadata") or {}).get("title", "").startswith("🛠 calculator")]
        assert blocks and "42" in blocks[0]["content"] and "6*7" in blocks[0]["content"]
        assert blocks[0]["metadata"]["status"] == "done"
        # the tool result went back to the model in this provider's wire shape
        second = [r for r in fake_server.requests if r.model == name][-1]
        assert "42" in json.dumps(second.json)

        convs, msgs = rows(services)
        conv = next(c for c in convs if c["title"].startswith(f"what is 6 times 7 ({provider})"))
        reply = [m for m in msgs if m["conversation_id"] == conv["id"] and m["role"] == "assistant"][0]
        calls = reply["tool_calls"] if isinstance(reply["tool_calls"], list) else json.loads(reply["tool_calls"])
        assert calls[0]["name"] == "calculator" and calls[0]["result"].strip() == "42"
        assert reply["content"].endswith("The answer is 42.")

        # reopening the conversation shows the tool block again
        from sqlmodel import Session

        from storage import repository as repo
        from ui.convert import stored_to_chatbot

        with Session(services.engine) as s:
            detail = repo.get_conversation(session=s, owner=conv["owner"], conversation_id=conv["id"])
        restored = stored_to_chatbot(detail.messages)
        assert any((m.get("metadata") or {}).get("title", "").startswith("🛠 calculator") for m in restored)


def test_tools_are_off_unless_asked(app, fake_server):
    url, _ = app
    fake_server.set_scenario("plain-no-tools", Scenario(text="plain answer", tokens=2))
    Client(url, verbose=False).predict(message="hi", model="openai:plain-no-tools", system_prompt="", api_name="/chat")
    sent = [r for r in fake_server.requests if r.model == "plain-no-tools"][-1]
    assert "tools" not in sent.json


# -- files (issue 14): Gradio's multimodal form with handle_file ----------------------------------------


@pytest.fixture(scope="module")
def attachments(tmp_path_factory, fake_server):
    import io

    from PIL import Image
    from pypdf import PdfWriter

    folder = tmp_path_factory.mktemp("files")
    chart = folder / "chart.png"
    Image.new("RGB", (120, 80), "navy").save(chart)
    paper = folder / "paper.pdf"
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    out = io.BytesIO()
    writer.write(out)
    paper.write_bytes(out.getvalue())
    notes = folder / "notes.md"
    notes.write_text("# Notes\nthe answer is 42\n")
    # A curated Anthropic model reads images and PDFs (the fake OpenAI endpoint counts as a compatible one, which reads neither).
    fake_server.set_scenario("claude-sonnet-4-6", Scenario(text="A navy rectangle and an empty page. ", tokens=8))
    return {"chart": chart, "paper": paper, "notes": notes}


def attachment_rows(services):
    with services.engine.connect() as c:
        return c.execute(sa.text("select l.name, a.mime, a.size from message_attachment l join attachment a "
                                 "on a.id = l.attachment_id order by l.name")).all()


def test_chat_api_takes_files_as_gradios_multimodal_message(app, fake_server, attachments):
    from gradio_client import handle_file

    url, services = app
    client = Client(url, verbose=False)
    files = [handle_file(str(attachments[k])) for k in ("chart", "paper", "notes")]
    final = client.predict(message={"text": "What is in these?", "files": files}, model="anthropic:claude-sonnet-4-6",
                           system_prompt="", api_name="/chat")
    assert answer_of(final), "the model answered"
    sent = [r for r in fake_server.requests if r.model == "claude-sonnet-4-6"][-1].json["messages"][-1]
    kinds = [part["type"] for part in sent["content"]]
    assert kinds == ["image", "document", "text", "text"], kinds
    assert sent["content"][0]["source"]["media_type"] == "image/png"
    assert sent["content"][1]["title"] == "paper.pdf"
    assert "the answer is 42" in sent["content"][2]["text"] and "notes.md" in sent["content"][2]["text"]
    assert sent["content"][3]["text"] == "What is in these?"
    names = [r[0] for r in attachment_rows(services)]
    assert {"chart.png", "paper.pdf", "notes.md"} <= set(names)

    # A follow-up in the same chat sends the earlier files again (from the store: the chat holds only their paths).
    client.predict(message="And the second page?", model="anthropic:claude-sonnet-4-6", system_prompt="", api_name="/chat")
    again = [r for r in fake_server.requests if r.model == "claude-sonnet-4-6"][-1].json["messages"]
    assert [m["role"] for m in again] == ["user", "assistant", "user"]
    assert [b["type"] for b in again[0]["content"]] == ["image", "document", "text", "text"]
    assert again[0]["content"][0]["source"]["data"] == sent["content"][0]["source"]["data"]


def test_chat_api_refuses_an_image_for_a_model_without_vision_and_sends_nothing(app, fake_server, attachments):
    from gradio_client import handle_file

    url, services = app
    client = Client(url, verbose=False)
    before, stored = len(fake_server.requests), len(attachment_rows(services))
    final = client.predict(message={"text": "describe", "files": [handle_file(str(attachments["chart"]))]},
                           model="openai:gpt-test", system_prompt="", api_name="/chat")
    text = " ".join(m["content"] for m in final)
    assert "cannot read images" in text and "anthropic:claude-sonnet-4-6" in text and "not sent" in text.lower()
    assert len(fake_server.requests) == before and len(attachment_rows(services)) == stored


def test_compare_api_takes_files_and_a_pane_that_cannot_read_them_says_so(app, fake_server, attachments):
    from gradio_client import handle_file

    url, _ = app
    client = Client(url, verbose=False)
    before = len(fake_server.requests)
    out = client.predict(message={"text": "Describe the chart", "files": [handle_file(str(attachments["chart"]))]},
                         models=["anthropic:claude-sonnet-4-6", "openai:gpt-test"], api_name="/compare")
    by_model = {item["model"]: item for item in out}
    assert by_model["anthropic:claude-sonnet-4-6"]["error"] is None and by_model["anthropic:claude-sonnet-4-6"]["text"]
    assert "cannot read images" in (by_model["openai:gpt-test"]["error"] or "")
    sent = fake_server.requests[before:]
    assert [r.model for r in sent] == ["claude-sonnet-4-6"], "only the pane that reads images called its model"
    assert sent[0].json["messages"][-1]["content"][0]["type"] == "image"
    # The plain string form still works.
    plain = client.predict(message="just text", models=["openai:gpt-test", "anthropic:echo"], api_name="/compare")
    assert all(item["error"] is None for item in plain)


def echo_contents(fake_server) -> list[str]:
    """The texts of the messages the fake's echo model was last sent."""
    last = [r for r in fake_server.requests if r.provider == "anthropic" and r.model == "echo"][-1]
    return [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in last.json["messages"]]


def test_send_continues_retries_and_branches_one_conversation_tree(app, fake_server):
    url, services = app
    client = Client(url, verbose=False)
    params = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/send"]["parameters"]
    assert [p["parameter_name"] for p in params][:5] == ["message", "model", "system_prompt", "conversation_id", "parent_id"]

    def send(**inputs):
        return client.predict(model="anthropic:echo", api_name="/send", **inputs)

    first = send(message="Plan a trip")
    cid = first["conversation_id"]
    second = send(message="To Lisbon", conversation_id=cid)
    assert second["conversation_id"] == cid and echo_contents(fake_server) == ["Plan a trip", first["reply"], "To Lisbon"]
    # Retry: a new reply to the stored message, which the model is sent again; no user message is stored.
    again = send(message="", conversation_id=cid, parent_id=second["user_message_id"])
    assert again["retry"] is True and again["user_message_id"] == second["user_message_id"]
    assert again["reply_id"] != second["reply_id"]
    assert echo_contents(fake_server) == ["Plan a trip", first["reply"], "To Lisbon"]
    # Branch from the first reply: the model sees that branch only, not "To Lisbon".
    branch = send(message="To Oslo", conversation_id=cid, parent_id=first["reply_id"])
    assert echo_contents(fake_server) == ["Plan a trip", first["reply"], "To Oslo"]
    assert branch["input_tokens"] is not None and branch["finish_reason"] == "stop"

    with services.engine.connect() as c:
        found = c.execute(sa.select(Message.__table__.c.id, Message.__table__.c.parent_id, Message.__table__.c.role)
                          .where(Message.__table__.c.conversation_id == uuid.UUID(cid))).all()
    parents = {str(i): (str(p) if p else None, role) for i, p, role in found}
    assert len(parents) == 7, "2 + 2 + 1 (retry) + 2 (branch): every version is kept"
    assert parents[again["reply_id"]][0] == second["user_message_id"]
    assert parents[branch["user_message_id"]][0] == first["reply_id"]

    # Another client is another owner: the conversation is not reachable, nothing is sent or saved.
    before = len(fake_server.requests)
    with pytest.raises(Exception, match="not one of your conversations"):
        Client(url, verbose=False).predict(message="hi", model="anthropic:echo", conversation_id=cid, api_name="/send")
    assert len(fake_server.requests) == before
