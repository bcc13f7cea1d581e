"""Attachments in a real browser: attach an image and a PDF, send, see them in the bubble; a file the model
cannot read stays in the box; reload and reopen; export and import; another browser gets none of the files."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image
from pypdf import PdfWriter

from tests.browser.test_chat_browser import open_app, pick_model, wait_until

pytestmark = pytest.mark.browser
SHOTS = Path("/tmp/shots")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("attach")
    chart = folder / "chart.png"
    image = Image.new("RGB", (320, 200), "white")
    for x in range(40, 280, 60):  # a bar chart, so the thumbnail is recognisable in the screenshots
        for px in range(x, x + 40):
            for py in range(200 - (x // 2), 190):
                image.putpixel((px, py), (79, 70, 229))
    image.save(chart)
    paper = folder / "paper.pdf"
    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    writer.add_blank_page(612, 792)
    with paper.open("wb") as fh:
        writer.write(fh)
    return {"chart": chart, "paper": paper}


APPS = {"attach_server": {"DEFAULT_MODEL": "demo:parley-demo"}}


@pytest.fixture(scope="module")
def server(request, apps):
    # Started by tests/browser/conftest.py's launcher while the module before this one runs.
    with apps.app(request.module, "attach_server") as (proc, db):
        yield proc, db


def attach(page, *paths: Path) -> None:
    page.locator("#msg input[type=file]").set_input_files([str(p) for p in paths])
    # Each upload shows a preview in the box once it is on the server.
    wait_until(lambda: page.locator("#msg .thumbnail-item, #msg .thumbnail-image, #msg img").count() >= 1, what="upload previews")


def model_calls(fake_server) -> list:
    """The requests that ask a model for a reply (the app also lists the fake's models in the background)."""
    return [r for r in fake_server.requests if r.path.endswith(("/chat/completions", "/messages"))
            or "generateContent" in r.path]


def user_bubbles(page):
    return page.locator("[data-testid='user']")


def last_user_bubble_shows_files(page) -> bool:
    bubbles = user_bubbles(page)
    images = page.locator("[data-testid='user'] img")
    chips = page.locator("[data-testid='user'] [data-testid='chatbot-file']")
    return bubbles.count() > 0 and images.count() >= 1 and chips.count() >= 1


def chip_size(page) -> str:
    """The size written next to the PDF chip's type (ui/chatbox.py CHIP_SIZES)."""
    return page.locator("[data-testid='user'] .file-type").first.get_attribute("data-size") or ""


def attachment_rows(db: str):
    engine = sa.create_engine(db)
    try:
        with engine.connect() as c:
            return c.execute(sa.text("select a.mime, a.size, l.name from attachment a join message_attachment l "
                                     "on l.attachment_id = a.id order by l.name")).all()
    finally:
        engine.dispose()


def shoot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name))


def test_attach_send_reopen_export_import_and_nobody_else_sees_them(server, browser, files, fake_server, tmp_path):
    proc, db = server
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    open_app(page, proc.url)

    # A model without vision: the image is refused before anything is sent; text and files stay in the box.
    before = len(model_calls(fake_server))
    pick_model(page, "openai:gpt-test")
    attach(page, files["chart"])
    page.locator("#msg textarea").fill("What does this chart show?")
    page.locator("#msg textarea").press("Enter")
    page.get_by_text("cannot read images", exact=False).first.wait_for()
    assert page.locator("#msg textarea").input_value() == "What does this chart show?"
    assert page.locator("#msg img").count() >= 1, "the refused image is still in the box"
    assert user_bubbles(page).count() == 0 and len(model_calls(fake_server)) == before
    shoot(page, "attachments-refused-kept-in-box.png")

    # The demo model reads everything: add the PDF, send both; the bubble shows a thumbnail and a chip.
    pick_model(page, "demo:parley-demo")
    attach(page, files["paper"])
    page.locator("#msg textarea").press("Enter")
    wait_until(lambda: last_user_bubble_shows_files(page), what="thumbnail and chip in the sent bubble")
    wait_until(lambda: "paper.pdf" in " ".join(page.locator("[data-testid='bot']").all_inner_texts())
               and "first token" in " ".join(page.locator("[data-testid='bot']").all_inner_texts()), what="the demo's reply about the files")
    bot = " ".join(page.locator("[data-testid='bot']").all_inner_texts())
    assert "chart.png" in bot and "paper.pdf" in bot  # the demo names what reached it
    assert "paper.pdf" in " ".join(user_bubbles(page).all_inner_texts())
    wait_until(lambda: chip_size(page).endswith(("KB", "bytes")), what="the chip's size")
    rows = attachment_rows(db)
    assert sorted(r[2] for r in rows) == ["chart.png", "paper.pdf"]
    assert dict((r[2], r[0]) for r in rows) == {"chart.png": "image/png", "paper.pdf": "application/pdf"}
    page.locator("[data-testid='user']").first.scroll_into_view_if_needed()
    shoot(page, "attachments-desktop.png")
    image_url = page.locator("[data-testid='user'] img").first.get_attribute("src")

    # A phone-sized window shows the same bubble (with the sidebar, which covers a phone's screen, closed).
    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_label("Toggle Sidebar").click()
    page.locator("[data-testid='user'] img").first.scroll_into_view_if_needed()
    assert page.locator("[data-testid='user'] img").first.is_visible()
    page.wait_for_timeout(300)
    shoot(page, "attachments-phone.png")
    page.get_by_label("Toggle Sidebar").click()
    page.set_viewport_size({"width": 1400, "height": 900})

    # Another browser (its own cookie) and a client with none get nothing at the image's URL.
    other = browser.new_context()
    try:
        assert other.request.get(proc.url).ok  # the page gives it its own browser cookie
        assert other.request.get(image_url).status == 404
    finally:
        other.close()
    assert context.request.get(image_url).status == 200

    # Reload and reopen: the stored files are drawn the same way, from the store.
    page.reload()
    open_app(page, proc.url)
    page.locator("#conv-list label").first.click()
    wait_until(lambda: last_user_bubble_shows_files(page), what="the reopened conversation's files")
    reopened = page.locator("[data-testid='user'] img").first.get_attribute("src") or ""
    assert "parley-attachments" in reopened, reopened
    assert context.request.get(reopened).status == 200
    wait_until(lambda: chip_size(page).endswith(("KB", "bytes")), what="the reopened chip's size")
    shoot(page, "attachments-reopened.png")

    # Export JSON carries the files; importing it makes a second conversation that shows them too.
    page.locator("#manage").get_by_text("Manage conversation").click()
    page.get_by_role("button", name="Export JSON").click()
    link = page.locator("#manage a[download]").first
    link.wait_for()
    exported = tmp_path / "export.json"
    exported.write_bytes(context.request.get(link.get_attribute("href")).body())
    text = exported.read_text()
    assert "chart.png" in text and "paper.pdf" in text
    page.locator("#manage input[type=file]").last.set_input_files(str(exported))
    wait_until(lambda: page.locator("#conv-list label").count() >= 2, what="the imported conversation in the list")
    page.locator("#conv-list label").first.click()
    wait_until(lambda: last_user_bubble_shows_files(page), what="the imported conversation's files")
    page.locator("[data-testid='user'] img").first.scroll_into_view_if_needed()
    shoot(page, "attachments-imported.png")
    context.close()
