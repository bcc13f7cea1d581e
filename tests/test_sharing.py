"""Share by link through the launched app: the owner's handlers make and revoke links, and a fresh client
with no cookies and no login (APP_USERS is on) reads the page and its files at `/share/<token>`.

Also: the page escapes what the messages say and carries no script; another user cannot share
Alice's conversation by its id; a blind comparison run through the real Compare tab names no model on
its shared page until the vote; the core use cases on SQLite and PostgreSQL (tests/core fixtures).
"""

from __future__ import annotations

import asyncio
import io
import re
from datetime import UTC, datetime
from types import SimpleNamespace

import gradio as gr
import httpx
import pytest
from PIL import Image
from sqlmodel import Session

from core.sharing import SHARE_PREFIX, Sharing, SharingError
from storage import repository as repo
from storage.attachments import AttachmentIn
from storage.models import SHARE_CONVERSATION, SharedMessage, SharedView
from tests.apphelpers import app_env, in_process_app
from tests.storage.test_tree_exchange import ORDER, PARENTS, PATH, branched
from tests.test_compare import collect, run_data
from ui.compare.tab import build_compare_tab
from ui.context import TabContext
from ui.share_page import render_page, render_text
from ui.share_panel import ShareHandlers, absolute_url

ALICE, BOB = "alice", "bob"
HOSTILE = 'Look: <script>alert("x")</script> <img src=x onerror=alert(1)> **bold** `code`'
PRIVATE_TITLE = "alice private diary entry"
MODELS = ["openai:tokens-5", "anthropic:tokens-6"]
SECRETS = ("openai", "anthropic", "tokens-5", "tokens-6")


def request(user: str) -> SimpleNamespace:
    return SimpleNamespace(username=user, session_hash=f"s-{user}")


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), "red").save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def app(fake_server, tmp_path_factory):
    db = tmp_path_factory.mktemp("sharing") / "parley.db"
    with in_process_app(app_env(fake_server, f"sqlite:///{db}", APP_USERS="alice:wonderland,bob:builder")) as running:
        yield running


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def alice_chat(services) -> tuple[str, bytes]:
    """Alice's chat with an image and a hostile message, and another chat of hers that is not shared."""
    image = png_bytes()
    with Session(services.engine) as s:
        conversation = repo.create_conversation(session=s, owner=f"user:{ALICE}", title="Trip plan")
        ids = repo.begin_turn(session=s, owner=f"user:{ALICE}", conversation_id=conversation.id, content=HOSTILE,
                              provider="openai", model="gpt-test",
                              attachments=[AttachmentIn(name="map.png", mime="image/png", data=image, width=32, height=24)])
        repo.finish_turn(session=s, owner=f"user:{ALICE}", message_id=ids.assistant_message_id,
                         content="Go north, then <b>east</b>.", finish_reason="stop")
        repo.create_conversation(session=s, owner=f"user:{ALICE}", title=PRIVATE_TITLE)
    return str(conversation.id), image


def fresh_get(url: str) -> httpx.Response:
    with httpx.Client(timeout=30) as client:  # no cookies, no login
        return client.get(url)


def test_a_link_opens_for_anyone_without_login_and_revoking_ends_it(app, loop):
    url, services = app
    conversation_id, image = alice_chat(services)
    share = ShareHandlers(services)

    # The app itself asks for a login (APP_USERS); the shared page does not.
    assert fresh_get(f"{url}/config").status_code in (401, 403)
    link_box, links = loop.run_until_complete(share.share_conversation(conversation_id, "path", None, request(ALICE)))
    path = link_box["value"]
    assert link_box["visible"] and path.startswith(SHARE_PREFIX)
    token = path[len(SHARE_PREFIX):]
    assert len(token) >= 43 and [label for label, _ in links["choices"]][0].startswith("Chat: Trip plan")

    page = fresh_get(url + path)
    assert page.status_code == 200, page.text
    body = page.text
    assert "Trip plan" in body and "Go north, then &lt;b&gt;east&lt;/b&gt;." in body
    assert "<script" not in body.lower() and "onerror=alert" not in body.replace("&lt;img src=x onerror=alert(1)&gt;", "")
    assert "&lt;script&gt;" in body and "<strong>bold</strong>" in body and "<code>code</code>" in body
    assert PRIVATE_TITLE not in body and "Conversations" not in body  # no sidebar, nothing else of Alice's
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none': no script at all
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"

    [src] = re.findall(r'<img src="([^"]+)"', body)
    file = fresh_get(url + src)
    assert file.status_code == 200 and file.content == image and file.headers["content-type"] == "image/png"

    # Bob cannot share Alice's conversation by its id, and does not see her links.
    with pytest.warns(UserWarning, match="Not shared: No conversation"):
        refused = loop.run_until_complete(share.share_conversation(conversation_id, "path", None, request(BOB)))
    assert refused == (gr.skip(), gr.skip())
    assert loop.run_until_complete(Sharing(services).links(f"user:{BOB}")) == []
    [(_, link_id)] = links["choices"]
    with pytest.warns(UserWarning, match="already revoked"):  # not his: refused
        loop.run_until_complete(share.revoke(link_id, None, request(BOB)))
    assert fresh_get(url + path).status_code == 200

    cleared, after = loop.run_until_complete(share.revoke(link_id, None, request(ALICE)))
    assert cleared["visible"] is False and after["choices"] == []
    gone = fresh_get(url + path)
    assert gone.status_code == 404 and "This link is not valid" in gone.text and "Trip plan" not in gone.text
    assert fresh_get(url + src).status_code == 404


def test_the_panel_shares_the_current_path_or_every_version(app, loop):
    url, services = app
    with Session(services.engine) as s:
        ids = branched(s, f"user:{ALICE}")
    share = ShareHandlers(services)
    with pytest.warns(UserWarning, match="Choose what the link shows"):
        assert loop.run_until_complete(share.share_conversation(str(ids["cid"]), "all", None, request(ALICE))) == (gr.skip(), gr.skip())
    path_box, _ = loop.run_until_complete(share.share_conversation(str(ids["cid"]), "path", None, request(ALICE)))
    tree_box, links = loop.run_until_complete(share.share_conversation(str(ids["cid"]), "tree", None, request(ALICE)))
    assert [label for label, _ in links["choices"]][0].startswith("Chat: q1 first question · every version")

    path_page = fresh_get(url + path_box["value"]).text
    assert all(text in path_page for text in PATH)
    for hidden in ("a1 first answer", "q2 edited", "q1 edited from the start", "Version", "<details"):
        assert hidden not in path_page

    tree = fresh_get(url + tree_box["value"])
    assert tree.status_code == 200 and "script-src" not in tree.headers["content-security-policy"]
    assert "every version" in tree.text and "<script" not in tree.text.lower()
    page = tree.text.split("</header>", 1)[1]  # the messages (the title names the first question too)
    for text in (*PATH, "a1 first answer", "q2 edited, another chart", "a2 edited answer", "q1 edited from the start", "r answer"):
        assert page.count(text) == 1, text
    # The path reads in order outside any <details>; the other versions are inside them.
    outside = re.sub(r"<details.*?</details>", "", page, flags=re.S)
    assert [outside.index(text) for text in PATH] == sorted(outside.index(text) for text in PATH)
    assert "a1 first answer" not in outside and "q2 edited" not in outside
    for src in re.findall(r'<img src="([^"]+)"', page):  # both versions' charts are readable
        assert fresh_get(url + src).status_code == 200
    assert len(re.findall(r'<img src="', page)) == 2


def _view(whole_tree: bool) -> SharedView:
    roles = ["user", "assistant", "assistant", "user", "assistant", "user", "assistant", "user", "assistant"]
    messages = [SharedMessage(role=role, content=f"<{name}>", parent=parent)
                for name, role, parent in zip(ORDER, roles, PARENTS, strict=True)]
    return SharedView(kind=SHARE_CONVERSATION, title="Tree", created_at=datetime(2025, 1, 1, tzinfo=UTC),
                      messages=messages, whole_tree=whole_tree, path=[0, 2, 3, 4])


def test_the_whole_tree_page_nests_each_version_with_its_continuation():
    page = render_page(_view(True), "/share/t")
    assert all(page.count(f"&lt;{n}&gt;") == 1 for n in ORDER)
    assert page.count("<details") == 3  # q1's other root, a1b's retry, q2's edit
    assert "Version 2 of 2" in page and "Version 1 of 2" in page and "1 other version of this message" in page
    # q2b's reply is inside the same <details> as q2b (it continues that version), after it.
    block = re.search(r"<details[^>]*>(?:(?!</details>).)*&lt;q2b&gt;.*?</details>", page, re.S)
    assert block and "&lt;a2b&gt;" in block.group(0) and "&lt;a2&gt;" not in block.group(0)
    # Versions nested far deeper than Python's recursion limit still render: N(k) has the versions N(k+1)
    # and M(k+1); the M replies are made last, newest first, so each N line goes in its parent's <details>.
    depth = 1500
    deep = [SharedMessage(role="user", content="N0")]
    deep += [SharedMessage(role="user", content=f"N{k}", parent=k - 1) for k in range(1, depth + 1)]
    deep += [SharedMessage(role="assistant", content=f"M{k}", parent=k - 1) for k in range(depth, 0, -1)]
    view = SharedView(kind=SHARE_CONVERSATION, title="Deep", created_at=datetime(2025, 1, 1, tzinfo=UTC),
                      messages=deep, whole_tree=True, path=[0])
    page = render_page(view, "/share/t")
    assert page.count("<section") == len(deep) and page.count("<details") == depth
    assert page.endswith("</div></details>" * depth + "</main></body></html>")  # nested, not side by side


def test_the_path_page_shows_no_versions():
    page = render_page(_view(False), "/share/t")
    assert "Version" not in page and "<details" not in page and "every version" not in page


def test_unknown_and_malformed_links_answer_the_same_404(app):
    url, _ = app
    for path in ("/share/" + "A" * 43, "/share/short", "/share/", "/share/%3Cscript%3E", "/share/" + "A" * 43 + "/a/junk"):
        response = fresh_get(url + path)
        assert response.status_code == 404, path
        assert "This link is not valid" in response.text
    with httpx.Client(timeout=30) as client:
        assert client.post(url + "/share/" + "A" * 43).status_code == 405


def test_a_blind_comparison_shared_before_the_vote_names_no_model(app, loop):
    url, services = app
    with gr.Blocks():
        ctx = TabContext(
            services=services, owner=gr.State(None), model=gr.Dropdown(), system_prompt=gr.Textbox(),
            params=[gr.Slider(0, 2, value=1.0), gr.Slider(0, 1, value=1.0), gr.Slider(1, 65536, value=512),
                    gr.Number(value=None), gr.Radio(["default", "low"], value="default")],
            model_choices=[("Fast", "openai:fast")],
        )  # fmt: skip
        tab = build_compare_tab(ctx)
    session: dict = {}
    collect(loop, tab, run_data(tab, "Which of you knows wombats?", MODELS, blind=True, session=session), ALICE)
    assert session.get("comparison_id")
    share = ShareHandlers(services)
    path = loop.run_until_complete(share.share_comparison(session, None, request(ALICE)))["value"]

    before = fresh_get(url + path)
    assert before.status_code == 200 and "Which of you knows wombats?" in before.text
    assert "Model A" in before.text and "Model B" in before.text
    for secret in SECRETS:
        assert secret not in before.text.lower(), f"{secret} is on the shared page before the vote"

    loop.run_until_complete(tab.handlers.vote("0", session, None, request(ALICE)))
    after = fresh_get(url + path).text
    assert all(ref in after for ref in session["refs"]) and "🏆" in after


def test_the_compare_share_button_needs_a_saved_run_of_the_caller(app, loop):
    _, services = app
    share = ShareHandlers(services)
    with pytest.warns(UserWarning, match="Run a comparison first"):
        assert loop.run_until_complete(share.share_comparison({}, None, request(ALICE))) == gr.skip()
    with pytest.warns(UserWarning, match="No comparison"):
        assert loop.run_until_complete(share.share_comparison({"comparison_id": "nope"}, None, request(ALICE))) == gr.skip()


def test_the_link_shown_is_the_full_address_the_browser_used():
    from starlette.requests import Request

    scope = {"type": "http", "method": "POST", "path": "/gradio_api/queue/join", "root_path": "", "query_string": b"",
             "headers": [(b"host", b"parley.example:7860")], "scheme": "http", "server": ("parley.example", 7860)}
    assert absolute_url(SimpleNamespace(request=Request(scope)), "/share/tok") == "http://parley.example:7860/share/tok"
    behind = {**scope, "headers": [(b"host", b"10.0.0.5"), (b"x-forwarded-host", b"chat.example.org"), (b"x-forwarded-proto", b"https")]}
    assert absolute_url(SimpleNamespace(request=Request(behind)), "/share/tok") == "https://chat.example.org/share/tok"
    assert absolute_url(None, "/share/tok") == "/share/tok"


@pytest.mark.parametrize(("text", "html"), [
    ("<b>hi</b> & bye", "&lt;b&gt;hi&lt;/b&gt; &amp; bye"),
    ("```python\nprint('<x>')\n```\nafter", "<pre><code>print(&#x27;&lt;x&gt;&#x27;)</code></pre>\nafter"),
    ("a `<i>` b", "a <code>&lt;i&gt;</code> b"),
    ("**<u>x</u>**", "<strong>&lt;u&gt;x&lt;/u&gt;</strong>"),
])  # fmt: skip
def test_messages_are_rendered_escaped(text, html):
    assert render_text(text) == html


# -- the use cases on both backends (tests/core's fixtures) ------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def core_services(request, tmp_path):
    from chat.registry import Registry, Settings
    from core.config import AppConfig
    from core.services import Services
    from storage.db import init_db, make_engine
    from tests.storage.conftest import pg_schema_engine

    def build(engine):
        env: dict[str, str] = {}
        return Services.build(AppConfig.from_env(env), Registry.from_settings(Settings.from_env(env)), engine)

    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'core.db'}")
        init_db(engine)
        built = build(engine)
        yield built
        built.close()
        engine.dispose()
        return
    with pg_schema_engine() as engine:
        init_db(engine)
        built = build(engine)
        yield built
        built.close()


def test_core_rules(core_services, loop):
    sharing = Sharing(core_services)
    with Session(core_services.engine) as s:
        cid = str(repo.create_conversation(session=s, owner="anon-" + "a" * 22, title="Plans").id)
    owner = "anon-" + "a" * 22
    with pytest.raises(SharingError, match="Open a saved conversation"):
        loop.run_until_complete(sharing.share_conversation(owner, None))
    with pytest.raises(SharingError, match="Run a comparison"):
        loop.run_until_complete(sharing.share_comparison(owner, ""))
    with pytest.raises(SharingError, match="Not shared"):
        loop.run_until_complete(sharing.share_conversation("anon-" + "b" * 22, cid))
    created = loop.run_until_complete(sharing.share_conversation(owner, cid))
    token = created.path[len(SHARE_PREFIX):]
    view = loop.run_until_complete(sharing.view(token))
    assert view is not None and view.title == "Plans"
    assert loop.run_until_complete(sharing.view(token[:-1] + ("A" if token[-1] != "A" else "B"))) is None
    with pytest.raises(SharingError, match="Pick a link"):
        loop.run_until_complete(sharing.revoke(owner, None))
    loop.run_until_complete(sharing.revoke(owner, str(created.link.id)))
    with pytest.raises(SharingError, match="already revoked"):
        loop.run_until_complete(sharing.revoke(owner, str(created.link.id)))
    assert loop.run_until_complete(sharing.view(token)) is None
    assert loop.run_until_complete(sharing.file(token, "junk")) is None
