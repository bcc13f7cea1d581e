"""Image cleaning with Pillow: decode fully, drop metadata, apply EXIF orientation, scale, re-encode.

Only chat.attachments calls this; it turns `ImageRefused` into a message that names the file.
All of it is CPU-bound and synchronous: callers run it in a worker thread.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps

from chat.attachments import scaled_size

#: Pillow's format name for each image type Parley accepts (the only decoder tried for it).
PIL_FORMATS: dict[str, str] = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF"}
JPEG_QUALITY = 90
WEBP_QUALITY = 90
_DEFAULT_FRAME_MS = 100


class ImageRefused(ValueError):
    """The image cannot be used; the text completes a sentence that starts with the file's name."""


@dataclass(frozen=True, slots=True)
class CleanImage:
    data: bytes
    width: int
    height: int
    frames: int


def _to_srgb(img: Image.Image) -> Image.Image:
    """Convert an image with an embedded colour profile to sRGB, so dropping the profile keeps its colours."""
    icc = img.info.get("icc_profile")
    if not icc:
        return img
    mode = "RGBA" if "A" in img.getbands() or img.mode == "P" else "RGB"
    if img.mode not in ("L", "RGB", "RGBA", "CMYK"):
        img = img.convert(mode)  # the colour engine takes no palette or two-channel images
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"), outputMode=mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        # A broken or unsupported profile: keep the pixels as they are (most such files are sRGB anyway).
        return img
    return converted if converted is not None else img


def _normalise(frame: Image.Image, mime: str) -> Image.Image:
    """A frame in a mode its format can store, with transparency as alpha (the info that carried it is dropped)."""
    if "transparency" in frame.info and frame.mode in ("P", "L", "RGB", "1"):
        frame = frame.convert("RGBA")
    frame = _to_srgb(frame)
    if mime == "image/jpeg" and frame.mode not in ("L", "RGB"):
        frame = frame.convert("RGB")
    elif mime == "image/webp" and frame.mode not in ("RGB", "RGBA"):
        frame = frame.convert("RGBA" if "A" in frame.getbands() else "RGB")
    elif mime == "image/png" and frame.mode in ("CMYK", "YCbCr", "LAB", "HSV", "F"):
        frame = frame.convert("RGB")
    return frame


def _scale(frame: Image.Image, size: tuple[int, int]) -> Image.Image:
    if frame.size == size:
        return frame
    if frame.mode in ("P", "1"):
        frame = frame.convert("RGBA")  # resampling a palette image picks neighbours; convert for a smooth result
    # reducing_gap: a cheap box reduction first, then Lanczos over the last factor of 3 (same look, much faster).
    return frame.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _encode(frames: list[Image.Image], durations: list[int], loop: int | None, mime: str) -> bytes:
    """Encode frames in `mime`'s format with no metadata: no EXIF, XMP, ICC profile, text chunks or comments."""
    for f in frames:
        # Pillow's encoders read extras (ICC profile, EXIF, comments, dpi) from `info`; a fresh dict holds none.
        f.info = {}
    out = io.BytesIO()
    fmt = PIL_FORMATS[mime]
    kwargs: dict[str, object] = {}
    if mime == "image/jpeg":
        kwargs["quality"] = JPEG_QUALITY
    elif mime == "image/webp":
        kwargs["quality"] = WEBP_QUALITY
    if len(frames) > 1:
        kwargs.update(save_all=True, append_images=frames[1:], duration=durations)
        if loop is not None:
            kwargs["loop"] = loop
    frames[0].save(out, fmt, **kwargs)
    return out.getvalue()


def _open(data: bytes, mime: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=[PIL_FORMATS[mime]])
    except Image.DecompressionBombError as e:
        raise ImageRefused(f"has too many pixels to open safely ({e})") from e
    except Exception as e:  # noqa: BLE001 - any failure of a decoder on untrusted bytes means "unreadable"
        raise ImageRefused("could not be read as an image (the file is damaged or not what its type says)") from e


def clean_image(
    data: bytes, mime: str, *, max_side: int, max_pixels: int, max_animation_pixels: int, max_frames: int
) -> CleanImage:
    """Decode every frame (a truncated file fails here), drop all metadata, orient, scale, re-encode as `mime`.

    The pixel checks run on the header's size before any pixel is decoded: a small file that
    claims a huge canvas (a decompression bomb) is refused without allocating it.
    """
    img = _open(data, mime)
    with img:
        width, height = img.size
        if width < 1 or height < 1:
            raise ImageRefused("has no pixels")
        if width * height > max_pixels:
            raise ImageRefused(
                f"is {width}×{height} px ({width * height / 1e6:.0f} megapixels); the limit is "
                f"{max_pixels / 1e6:.0f} megapixels"
            )
        loop = img.info.get("loop")
        frames: list[Image.Image] = []
        durations: list[int] = []
        try:
            # Frame by frame rather than `n_frames` (which reads the whole file first), so an animation
            # over the limits is refused as soon as it passes them.
            while True:
                try:
                    img.seek(len(frames))
                except EOFError:
                    break
                if len(frames) >= max_frames or (frames and (len(frames) + 1) * width * height > max_animation_pixels):
                    raise ImageRefused(
                        f"is an animation with more frames than Parley takes ({width}×{height} px a frame; the "
                        f"limit is {max_frames:,} frames and {max_animation_pixels / 1e6:.0f} megapixels in all)"
                    )
                durations.append(int(img.info.get("duration") or _DEFAULT_FRAME_MS))
                frames.append(img.copy())  # copy() decodes the frame: a truncated file raises here
            if len(frames) == 1:
                # Rotate the pixels as the camera said, since the EXIF that said it is about to be dropped.
                frames[0] = ImageOps.exif_transpose(frames[0])
        except ImageRefused:
            raise
        except Exception as e:  # noqa: BLE001 - any decoder failure on untrusted bytes means "damaged"
            raise ImageRefused("is not a complete image (the file is truncated or damaged)") from e
        if not frames:
            raise ImageRefused("could not be read as an image (it has no frames)")
    width, height = frames[0].size
    size = scaled_size(width, height, max_side)
    frames = [_scale(_normalise(f, mime), size) for f in frames]
    encoded = _encode(frames, durations, loop if isinstance(loop, int) else None, mime)
    return CleanImage(encoded, size[0], size[1], len(frames))


def rescale_image(data: bytes, mime: str, size: tuple[int, int]) -> bytes:
    """Re-encode an already cleaned image at a smaller size (every frame of an animation)."""
    with _open(data, mime) as img:
        if mime == "image/jpeg":
            # Let the JPEG decoder scale by 1/2, 1/4 or 1/8 while decoding (never below `size`).
            img.draft(img.mode, size)
        loop = img.info.get("loop")
        frames: list[Image.Image] = []
        durations: list[int] = []
        for index in range(int(getattr(img, "n_frames", 1))):
            img.seek(index)
            durations.append(int(img.info.get("duration") or _DEFAULT_FRAME_MS))
            frames.append(img.copy())
    frames = [_scale(_normalise(f, mime), size) for f in frames]
    return _encode(frames, durations, loop if isinstance(loop, int) else None, mime)
