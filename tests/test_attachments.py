"""chat.attachments: sniffing, limits, cleaning (metadata, orientation, frames), labels and token formulas.

Every bad file is built here from real bytes and goes through the real Pillow and pypdf.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zlib

import pytest
from PIL import Image, ImageCms, PngImagePlugin
from pypdf import PdfWriter
from pypdf._doc_common import PdfDocCommon

import chat.attachments as attachments
import chat.images as images
from chat.attachments import (
    AttachmentError,
    Limits,
    anthropic_image_tokens,
    attachment_tokens,
    clean_name,
    describe,
    fit_image,
    gemini_image_tokens,
    ingest,
    ingest_files,
    openai_image_tokens,
    sniff,
    text_block,
)
from chat.types import PDF_MIME, TEXT_MIME, Attachment

# -- builders --------------------------------------------------------------------------------------


def image_bytes(fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB", noise: bool = False, **save: object) -> bytes:
    img = Image.new(mode, size, "red" if mode != "P" else 1)
    if noise:
        rnd = random.Random(7)
        img = Image.frombytes("RGB", size, bytes(rnd.getrandbits(8) for _ in range(size[0] * size[1] * 3)))
    out = io.BytesIO()
    img.save(out, fmt, **save)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height but whose data is a few bytes: a decompression bomb's shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def pdf_bytes(pages: int = 2) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(612, 792)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def raw_pdf(kids: int, declared: int) -> bytes:
    """A PDF with `kids` real page objects under one /Pages node whose /Count says `declared`."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    refs = b" ".join(b"%d 0 R" % (i + 3) for i in range(kids))
    objects.append(b"<< /Type /Pages /Count %d /Kids [%s] >>" % (declared, refs))
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"
    objects.extend(page for _ in range(kids))
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def refused(name: str, data: bytes, limits: Limits | None = None) -> str:
    with pytest.raises(AttachmentError) as e:
        ingest(name, data, limits or Limits())
    assert e.value.message == str(e.value)
    return e.value.message


# -- sniffing and bad files ------------------------------------------------------------------------


def test_sniff_reads_the_bytes_not_the_name() -> None:
    assert sniff(image_bytes("PNG")) == "image/png"
    assert sniff(image_bytes("JPEG")) == "image/jpeg"
    assert sniff(image_bytes("GIF")) == "image/gif"
    assert sniff(image_bytes("WEBP")) == "image/webp"
    assert sniff(pdf_bytes()) == PDF_MIME
    assert sniff("héllo\n".encode()) == TEXT_MIME
    assert sniff(b"\xef\xbb\xbfwith a BOM") == TEXT_MIME
    assert sniff(b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 56) is None
    assert sniff(b"MZ\x90\x00\x03\x00\x00\x00") is None
    assert sniff("Título".encode("latin-1")) is None  # not UTF-8
    assert sniff(b"text with a \x00 NUL") is None
    assert sniff(b"") is None


def test_a_renamed_executable_is_refused_whatever_its_name() -> None:
    elf = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4
    msg = refused("photo.png", elf)
    assert msg.startswith("photo.png is not a file type Parley can attach")
    assert "contents, not its name" in msg
    pe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 100
    assert refused("cat.jpg", pe).startswith("cat.jpg is not a file type")


def test_a_script_named_png_is_text_not_an_image() -> None:
    att = ingest("photo.png", b"#!/bin/sh\necho hi\n")
    assert att.kind == "text" and att.mime == TEXT_MIME and att.width is None


def test_an_empty_file_is_refused() -> None:
    assert refused("notes.txt", b"") == "notes.txt is empty (0 bytes)."


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_truncated_image_is_refused(fmt: str) -> None:
    whole = image_bytes(fmt, (256, 256), noise=True)
    ingest("ok." + fmt.lower(), whole)  # the whole file is fine
    msg = refused("cut." + fmt.lower(), whole[: len(whole) // 2])
    assert msg == f"cut.{fmt.lower()} is not a complete image (the file is truncated or damaged)."


def test_an_image_with_a_header_only_is_refused() -> None:
    png = image_bytes("PNG")
    assert "could not be read as an image" in refused("x.png", png[:20])


def test_a_decompression_bomb_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    msg = refused("bomb.png", png_header_only(9000, 7000))
    assert msg == "bomb.png is 9000×7000 px (63 megapixels); the limit is 50 megapixels."
    # Beyond Pillow's own hard limit, its refusal is passed on the same way.
    assert "too many pixels" in refused("bigger.png", png_header_only(60000, 60000))


def test_an_oversized_file_is_refused_before_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attachments, "sniff", lambda data: pytest.fail("sniffed an oversized file"))
    big = b"a" * (20 * 1024 * 1024 + 1)
    assert refused("huge.txt", big) == "huge.txt is 20 MB; the limit is 20 MB per file."
    assert refused("big.txt", b"a" * 3000, Limits(max_file_bytes=2048)) == (
        "big.txt is 2.9 KB; the limit is 2.0 KB per file."
    )


def test_too_many_files_or_bytes_are_refused_before_any_file_is_decoded() -> None:
    # The files are empty: had they been ingested, the message would be about an empty file.
    with pytest.raises(AttachmentError) as e:
        ingest_files([(f"f{i}.txt", b"") for i in range(11)])
    assert e.value.message == "11 files are attached; the limit is 10 files per message."
    with pytest.raises(AttachmentError) as e:
        ingest_files([("a.txt", b"x" * 600), ("b.txt", b"y" * 600)], Limits(max_message_bytes=1024))
    assert e.value.message == "The files come to 1.2 KB together; the limit is 1.0 KB per message."
    ok = ingest_files([("a.txt", b"x"), ("b.md", b"y")])
    assert [a.name for a in ok] == ["a.txt", "b.md"]


# -- PDFs ------------------------------------------------------------------------------------------


def test_a_pdf_is_counted_and_kept_as_uploaded() -> None:
    data = pdf_bytes(3)
    att = ingest("paper.pdf", data)
    assert (att.kind, att.pages, att.data, att.size) == ("pdf", 3, data, len(data))
    assert att.text is None  # blank pages have no text


def test_a_pdf_bomb_is_refused_from_its_declared_count_without_walking_the_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = raw_pdf(100_000, 100_000)
    monkeypatch.setattr(PdfDocCommon, "_flatten", lambda *a, **k: pytest.fail("walked the page tree"))
    assert refused("bomb.pdf", bomb) == "bomb.pdf has 100,000 pages; the limit is 100 pages."


def test_a_pdf_whose_count_lies_is_stopped_after_a_bounded_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    visited = 0
    real = PdfDocCommon._flatten_leaf_page

    def counting(self: PdfDocCommon, **kwargs: object) -> object:
        nonlocal visited
        visited += 1
        return real(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PdfDocCommon, "_flatten_leaf_page", counting)
    msg = refused("liar.pdf", raw_pdf(100_000, 1))
    assert msg == "liar.pdf has more than 100 pages; the limit is 100 pages."
    assert 0 < visited <= 4 * 100 + 64


def test_a_pdf_over_the_page_limit_is_refused_with_the_limit() -> None:
    assert refused("long.pdf", pdf_bytes(6), Limits(max_pdf_pages=5)) == "long.pdf has 6 pages; the limit is 5 pages."


def test_an_encrypted_or_broken_pdf_is_refused() -> None:
    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    writer.encrypt("secret")
    out = io.BytesIO()
    writer.write(out)
    assert "password-protected" in refused("locked.pdf", out.getvalue())
    assert "could not be read as a PDF" in refused("junk.pdf", b"%PDF-1.4\n garbage")
    assert refused("none.pdf", raw_pdf(0, 0)) == "none.pdf has no pages."


def text_pdf(text: str) -> bytes:
    """A one-page PDF that draws `text` in Helvetica (so its text can be extracted)."""
    stream = b"BT /F1 24 Tf 72 700 Td (%s) Tj ET" % text.encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Count 1 /Kids [3 0 R] >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_a_pdf_s_text_is_extracted_and_bounded() -> None:
    att = ingest("memo.pdf", text_pdf("Quarterly figures rose"))
    assert att.pages == 1 and att.text == "Quarterly figures rose"
    short = ingest("memo.pdf", text_pdf("Quarterly figures rose"), Limits(max_text_chars=9))
    assert short.text == "Quarterly"  # the PDF is still accepted: its text is cut, not refused


# -- images: metadata, orientation, frames, scaling ------------------------------------------------


def exif_with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x010F] = "SpyCam"  # Make
    exif[0x0131] = "EditorPro 9"  # Software
    exif[0x8825] = {2: (51.0, 30.0, 0.0)}  # GPS IFD: latitude
    return exif


def test_jpeg_metadata_is_dropped_and_orientation_applied() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = image_bytes("JPEG", (80, 40), exif=exif_with_orientation(6), icc_profile=icc, comment=b"secret note")
    with Image.open(io.BytesIO(src)) as before:  # the source really carries it all
        assert before.getexif()[0x010F] == "SpyCam" and before.info.get("icc_profile") and before.info.get("comment")
    att = ingest("photo.jpg", src)
    assert (att.mime, att.width, att.height) == ("image/jpeg", 40, 80)  # orientation 6: turned a quarter
    with Image.open(io.BytesIO(att.data)) as out:
        assert out.format == "JPEG" and out.size == (40, 80)
        assert dict(out.getexif()) == {}
        assert not {"exif", "icc_profile", "comment", "xmp", "photoshop"} & set(out.info)
    assert b"SpyCam" not in att.data and b"secret note" not in att.data
    assert att.sha256 == hashlib.sha256(att.data).hexdigest() and att.size == len(att.data)
    # Upright, no profile: nothing to transform, and still nothing of the source's extras is left.
    upright = ingest("up.jpg", image_bytes("JPEG", (30, 20), exif=exif_with_orientation(1), comment=b"secret note"))
    with Image.open(io.BytesIO(upright.data)) as out:
        assert out.size == (30, 20) and dict(out.getexif()) == {} and "comment" not in out.info


def test_png_text_chunks_exif_and_profile_are_dropped_transparency_kept() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doe")
    info.add_text("Comment", "gps 51.5N")
    img = Image.new("RGBA", (30, 20), (0, 0, 255, 0))
    img.putpixel((0, 0), (255, 0, 0, 255))
    buf = io.BytesIO()
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img.save(buf, "PNG", pnginfo=info, exif=exif_with_orientation(1), icc_profile=icc)
    att = ingest("shot.png", buf.getvalue())
    with Image.open(io.BytesIO(att.data)) as out:
        assert out.format == "PNG" and out.mode == "RGBA"
        assert getattr(out, "text", {}) == {} and dict(out.getexif()) == {}
        assert "icc_profile" not in out.info
        assert out.getpixel((0, 0)) == (255, 0, 0, 255) and out.getpixel((5, 5))[3] == 0
    assert b"Jane Doe" not in att.data


def test_webp_metadata_is_dropped() -> None:
    src = image_bytes("WEBP", (50, 30), exif=exif_with_orientation(1))
    att = ingest("pic.webp", src)
    with Image.open(io.BytesIO(att.data)) as out:
        assert out.format == "WEBP" and dict(out.getexif()) == {} and "exif" not in out.info


def gif_frames(colours: list[str], size: tuple[int, int] = (40, 30)) -> bytes:
    frames = [Image.new("RGB", size, c) for c in colours]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=[100, 200, 300][: len(colours)],
                   loop=0, comment=b"made by a test")
    return buf.getvalue()


def test_an_animated_gif_keeps_its_frames_and_timing() -> None:
    att = ingest("anim.gif", gif_frames(["red", "lime", "blue"]))
    with Image.open(io.BytesIO(att.data)) as out:
        assert out.format == "GIF" and out.n_frames == 3 and "comment" not in out.info
        seen = []
        for i in range(3):
            out.seek(i)
            seen.append((out.convert("RGB").getpixel((5, 5)), out.info.get("duration")))
    assert seen == [((255, 0, 0), 100), ((0, 255, 0), 200), ((0, 0, 255), 300)]


def test_an_animation_over_the_pixel_budget_is_refused() -> None:
    gif = gif_frames(["red", "lime", "blue"])
    msg = refused("long.gif", gif, Limits(max_animation_pixels=3000))
    assert msg == (
        "long.gif is an animation with more frames than Parley takes (40×30 px a frame; the limit is 1,000 frames "
        "and 0 megapixels in all)."
    )
    assert refused("many.gif", gif, Limits(max_frames=2)).startswith("many.gif is an animation with more frames")
    assert ingest("ok.gif", gif, Limits(max_frames=3)).kind == "image"


def test_an_image_larger_than_the_side_limit_is_scaled_down() -> None:
    att = ingest("wide.png", image_bytes("PNG", (1000, 250)), Limits(max_image_side=400))
    assert (att.width, att.height) == (400, 100)
    with Image.open(io.BytesIO(att.data)) as out:
        assert out.size == (400, 100)


def test_fit_image_is_unchanged_when_it_fits_and_memoised_when_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_FILE_WORKERS", "0")  # the counting spy below must run in this process
    att = ingest("chart.png", image_bytes("PNG", (1200, 800))).model_copy(update={"id": "a1"})
    assert fit_image(att, 2048) is att
    calls = 0
    real = images.rescale_image

    def counting(data: bytes, mime: str, size: tuple[int, int]) -> bytes:
        nonlocal calls
        calls += 1
        return real(data, mime, size)

    monkeypatch.setattr(images, "rescale_image", counting)
    small = fit_image(att, 600)
    again = fit_image(att, 600)
    assert calls == 1 and again.data == small.data
    assert (small.width, small.height, small.name, small.id) == (600, 400, "chart.png", "a1")
    with Image.open(io.BytesIO(small.data)) as out:
        assert out.size == (600, 400) and out.format == "PNG"
    assert small.size == len(small.data) and small.sha256 != att.sha256
    assert fit_image(att, 2000, max_pixels=240_000).width == 600  # the area bound applies too


def test_the_fit_cache_is_bounded_by_bytes() -> None:
    cache = attachments._FitCache(max_bytes=10)
    cache.put(("a", "image/png", 1, None), (b"x" * 6, "a", 1, 1))
    cache.put(("b", "image/png", 1, None), (b"y" * 6, "b", 1, 1))  # 12 bytes: the older one goes
    cache.put(("c", "image/png", 1, None), (b"z" * 11, "c", 1, 1))  # larger than the whole cache: not kept
    assert cache.get(("a", "image/png", 1, None)) is None
    assert cache.get(("b", "image/png", 1, None)) == (b"y" * 6, "b", 1, 1)
    assert cache.get(("c", "image/png", 1, None)) is None


# -- text ------------------------------------------------------------------------------------------


def test_text_is_decoded_as_utf8_and_stored_without_a_bom() -> None:
    att = ingest("notes.md", "\ufeff# Título\n".encode())
    assert att.text == "# Título\n" and att.data == "# Título\n".encode() and att.kind == "text"
    assert "not a file type" in refused("latin.txt", "Título".encode("latin-1"))
    assert "not a file type" in refused("nul.txt", b"abc\x00def")
    cut = "naïve".encode()[:3]  # ends inside the two bytes of "ï"
    assert sniff(cut) == TEXT_MIME  # a file's head may be cut there
    assert refused("cut.txt", cut) == "cut.txt is not valid text (it ends inside a character)."
    assert refused("long.txt", b"x" * 11, Limits(max_text_chars=10)) == (
        "long.txt has 11 characters of text; the limit is 10."
    )


def test_utf16_text_with_a_bom_is_text_and_binary_behind_a_bom_is_not() -> None:
    for encoding in ("utf-16-le", "utf-16-be"):
        bom = b"\xff\xfe" if encoding.endswith("le") else b"\xfe\xff"
        att = ingest("excel.csv", bom + "name;città\r\n".encode(encoding))
        assert att.text == "name;città\r\n" and att.data == "name;città\r\n".encode()
    assert sniff(b"\xff\xfe" + "ab".encode("utf-16-le") + b"\x01\x00\x02\x00") is None


def test_text_block_labels_the_file_and_fences_it_beyond_its_own_backticks() -> None:
    att = ingest("README.md", b"Run:\n```sh\nmake\n```\nand ````` five")
    block = text_block(att)
    assert block == "File: README.md\n``````md\nRun:\n```sh\nmake\n```\nand ````` five\n``````"
    plain = text_block(ingest("notes", b"hello"))
    assert plain == "File: notes\n```\nhello\n```"
    pdf = ingest("memo.pdf", text_pdf("Hello"))
    assert text_block(pdf) == "File: memo.pdf (text extracted from the PDF)\n```\nHello\n```"


def test_names_are_cleaned() -> None:
    assert clean_name("../../etc/pass\x00wd.txt") == "passwd.txt"
    assert clean_name("C:\\Users\\me\\chart.png") == "chart.png"
    assert clean_name("evil\u202egnp.exe") == "evilgnp.exe"  # the right-to-left override is gone
    assert clean_name("..") == "file" and clean_name("") == "file"
    long = clean_name("a" * 300 + ".png")
    assert len(long) == 200 and long.endswith(".png")
    assert ingest("dir/sub/x.txt", b"x").name == "x.txt"


def test_describe() -> None:
    chart = Attachment(name="chart.png", mime="image/png", size=240 * 1024, width=1200, height=800)
    assert describe(chart) == "chart.png (PNG image, 1200×800 px, 240 KB)"
    paper = Attachment(name="paper.pdf", mime=PDF_MIME, size=1_258_291, pages=12)
    assert describe(paper) == "paper.pdf (PDF, 12 pages, 1.2 MB)"
    notes = Attachment(name="notes.md", mime=TEXT_MIME, size=3482)
    assert describe(notes) == "notes.md (text, 3.4 KB)"


# -- token formulas --------------------------------------------------------------------------------


def test_image_token_formulas_match_the_documented_examples() -> None:
    # OpenAI's guide: 1024×1024 high detail costs 765; 2048×4096 costs 1105.
    assert openai_image_tokens(1024, 1024) == 765
    assert openai_image_tokens(2048, 4096) == 1105
    assert openai_image_tokens(100, 100) == 85 + 170
    # Anthropic's vision guide: 1000×1000 is about 1334 tokens; larger images are scaled to about 1,600.
    assert anthropic_image_tokens(1000, 1000) == 1334
    assert 1590 <= anthropic_image_tokens(4000, 4000) <= 1600
    # Gemini: 258 for both sides at most 384, else 258 per 768-px tile.
    assert gemini_image_tokens(384, 384) == 258
    assert gemini_image_tokens(1000, 1000) == 4 * 258


def test_attachment_tokens_per_provider() -> None:
    image = Attachment(name="a.png", mime="image/png", width=1024, height=1024)
    assert attachment_tokens(image, "openai") == 765
    assert attachment_tokens(image, "anthropic") == anthropic_image_tokens(1024, 1024)
    assert attachment_tokens(image, "gemini") == 4 * 258
    assert attachment_tokens(image, "ollama") == 765  # other providers: OpenAI's rule
    pdf = Attachment(name="p.pdf", mime=PDF_MIME, pages=10, text="x" * 4000)
    assert attachment_tokens(pdf, "gemini") == 2580
    assert attachment_tokens(pdf, "openai") == 10 * openai_image_tokens(816, 1056) + 1000
    assert attachment_tokens(pdf, "anthropic") == 10 * anthropic_image_tokens(816, 1056) + 1000
    text = ingest("n.txt", b"y" * 400)
    assert attachment_tokens(text, "anthropic") == (len(text_block(text)) + 3) // 4
