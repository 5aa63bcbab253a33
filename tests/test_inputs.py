"""Every kind of input people really have is either decoded to an RGB page or refused with a
reason, never a traceback. All files are generated here; none are committed."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ecgvit.data.io import IMAGE_SUFFIXES, BadImageError, count_pages, open_page
from ecgvit.data.preprocess import iter_image_files
from ecgvit.runtime.inputs import expand_inputs, open_image_bytes


def _page(size=(600, 428), colour="white") -> Image.Image:
    """A page-like RGB image: pink grid, black trace."""
    im = Image.new("RGB", size, colour)
    d = ImageDraw.Draw(im)
    w, h = size
    for x in range(0, w, 20):
        d.line([(x, 0), (x, h)], fill=(255, 170, 170))
    for y in range(0, h, 20):
        d.line([(0, y), (w, y)], fill=(255, 170, 170))
    d.line([(x, h // 2 + int(h / 5 * np.sin(x / 15))) for x in range(0, w, 3)], fill="black", width=2)
    return im


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def _pdf(objs: list[bytes], trailer_extra: bytes = b"") -> bytes:
    """A hand-made PDF from object bodies (1-based numbering, object 1 the catalog)."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for o in offsets:
        out += b"%010d 00000 n \n" % o
    out += b"trailer\n<< /Size %d /Root 1 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, trailer_extra, xref)
    return bytes(out)


def _reason(fn, *args, **kw) -> str:
    with pytest.raises(BadImageError) as ei:
        fn(*args, **kw)
    assert ei.value.reason and "Traceback" not in ei.value.reason
    return ei.value.reason


def _rgb_ok(im: Image.Image, size: tuple[int, int]) -> None:
    assert im.mode == "RGB"
    assert im.size == size
    assert tuple(im.info["full_size"]) == size


# --- image modes --------------------------------------------------------------------------------


def test_png_16bit_is_scaled_to_8bit(tmp_path):
    a = np.tile(np.linspace(0, 65535, 500).astype(np.uint16), (300, 1))
    f = tmp_path / "g16.png"
    Image.fromarray(a).save(f)
    assert Image.open(f).mode == "I;16"
    im = open_page(f)
    _rgb_ok(im, (500, 300))
    assert im.info["source_mode"] == "I;16"
    px = np.asarray(im)
    assert px[0, 0, 0] == 0 and px[0, -1, 0] == 255 and 100 < px[0, 250, 0] < 155  # full range kept, not clipped


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_png_alpha_composited_on_white(tmp_path, mode):
    im = Image.new(mode, (400, 300), (0, 0) if mode == "LA" else (0, 0, 0, 0))  # fully transparent
    ImageDraw.Draw(im).rectangle([0, 0, 99, 99], fill=(0, 255) if mode == "LA" else (0, 0, 0, 255))
    f = tmp_path / f"{mode}.png"
    im.save(f)
    out = open_page(f)
    _rgb_ok(out, (400, 300))
    assert out.info["source_mode"] == mode
    assert out.getpixel((300, 200)) == (255, 255, 255)  # transparent -> paper, not black
    assert out.getpixel((50, 50)) == (0, 0, 0)


def test_palette_png_and_gif(tmp_path):
    p = _page((500, 360)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    (tmp_path / "pal.png").write_bytes(_bytes(p, "PNG"))
    frames = [_page((500, 360)), _page((500, 360), colour=(230, 230, 255))]
    (tmp_path / "anim.gif").write_bytes(_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    for name in ("pal.png", "anim.gif"):
        im = open_page(tmp_path / name)
        _rgb_ok(im, (500, 360))
        assert im.info["source_mode"] == "P"
        assert min(im.getpixel((10, 10))) > 240  # paper
        r, g, b = im.getpixel((0, 10))  # a grid line keeps its colour through the palette
        assert r > 200 and g < 210 and b < 210
    # the GIF's first frame is the page; its page count is not expanded by folders
    assert open_page(tmp_path / "anim.gif").getpixel((5, 5)) != (230, 230, 255)


def test_webp(tmp_path):
    f = tmp_path / "p.webp"
    _page((640, 456)).save(f, "WEBP", quality=80)
    im = open_page(f)
    _rgb_ok(im, (640, 456))
    assert im.info["source_mode"] == "RGB"


def test_cmyk_jpeg(tmp_path):
    f = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (500, 356), (0, 255, 255, 0)).save(f, "JPEG", quality=95)  # pure red in CMYK
    im = open_page(f)
    _rgb_ok(im, (500, 356))
    assert im.info["source_mode"] == "CMYK"
    r, g, b = im.getpixel((250, 170))
    assert r > 200 and g < 60 and b < 60


# --- EXIF orientation ---------------------------------------------------------------------------


def _rotated_jpeg() -> bytes:
    """A 600x400 sensor image whose EXIF says 'rotate 90 CW to view' (orientation 6)."""
    im = Image.new("RGB", (600, 400), "white")
    ImageDraw.Draw(im).rectangle([0, 0, 99, 399], fill=(255, 0, 0))  # red band on the stored left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    return _bytes(im, "JPEG", exif=exif, quality=95)


def test_jpeg_exif_orientation_applied_to_files_and_bytes(tmp_path):
    data = _rotated_jpeg()
    f = tmp_path / "phone.jpg"
    f.write_bytes(data)
    for im in (open_page(f), open_image_bytes(data)):
        _rgb_ok(im, (400, 600))  # width/height swapped
        r, g, b = im.getpixel((200, 20))  # stored left edge is now the top
        assert r > 200 and g < 60 and b < 60
        assert im.getpixel((200, 580)) == (255, 255, 255) or min(im.getpixel((200, 580))) > 240


def test_exif_orientation_with_jpeg_draft(tmp_path):
    f = tmp_path / "phone.jpg"
    f.write_bytes(_rotated_jpeg())
    im = open_page(f, draft_size=(100, 150))
    assert im.info["full_size"] == (400, 600)  # the file's size after rotation, not the draft's
    assert im.size[0] < im.size[1] and im.size[0] < 400
    # the draft keeps the page's proportions, so crop boxes map back with one scale per axis
    assert abs(400 / im.size[0] - 600 / im.size[1]) < 0.1


# --- multi-page TIFF ----------------------------------------------------------------------------


@pytest.fixture
def tiff3(tmp_path) -> Path:
    sizes = [(400, 300), (500, 350), (600, 450)]
    colours = [(255, 255, 255), (0, 0, 255), (0, 128, 0)]
    frames = [Image.new("RGB", s, c) for s, c in zip(sizes, colours, strict=False)]
    f = tmp_path / "scan.tif"
    frames[0].save(f, save_all=True, append_images=frames[1:])
    return f


def test_multipage_tiff_pages(tiff3):
    assert count_pages(tiff3) == 3
    p2 = open_page(f"{tiff3}#page=2")
    _rgb_ok(p2, (500, 350))
    assert p2.getpixel((10, 10)) == (0, 0, 255)
    assert open_page(tiff3, page=3).size == (600, 450)
    assert open_page(tiff3).size == (400, 300)  # default: first page
    assert _reason(open_page, f"{tiff3}#page=4") == "page 4 out of range (file has 3 pages)"
    assert "out of range" in _reason(open_page, f"{tiff3}#page=0")
    data = tiff3.read_bytes()
    assert open_image_bytes(data, page=2).size == (500, 350)
    files, bad = expand_inputs([tiff3])
    assert files == [f"{tiff3}#page={i}" for i in (1, 2, 3)] and bad == []


def test_page_suffix_on_single_page_image_and_literal_names(tmp_path):
    f = tmp_path / "one.png"
    _page().save(f)
    assert open_page(f"{f}#page=1").size == (600, 428)
    assert _reason(open_page, f"{f}#page=2") == "page 2 out of range (file has 1 page)"
    # a file literally named like that is itself, not a page of something
    lit = tmp_path / "odd.png#page=2"
    _page((300, 212)).save(lit, "PNG")
    assert open_page(lit).size == (300, 212)
    files, bad = expand_inputs([f"{f}#page=1", str(lit)])
    assert files == [f"{f}#page=1", str(lit)] and bad == []


# --- PDF ----------------------------------------------------------------------------------------


@pytest.fixture
def pdf2(tmp_path) -> Path:
    # At 100 dpi: 11x8.5 in landscape, then 8.5x11 in portrait -> 2200x1700 and 1700x2200 at 200 dpi.
    a = _page((1100, 850))
    b = Image.new("RGB", (850, 1100), (0, 0, 255))
    f = tmp_path / "report.pdf"
    a.save(f, "PDF", save_all=True, append_images=[b], resolution=100)
    return f


def test_pdf_expands_to_pages_rendered_at_200dpi(pdf2):
    assert count_pages(pdf2) == 2
    files, bad = expand_inputs([pdf2])
    assert bad == [] and files == [f"{pdf2}#page=1", f"{pdf2}#page=2"]
    t0 = time.perf_counter()
    p1 = open_page(files[0])
    secs = time.perf_counter() - t0
    p2 = open_page(files[1])
    for im, size in ((p1, (2200, 1700)), (p2, (1700, 2200))):
        assert im.mode == "RGB" and im.info["source_mode"] == "PDF"
        assert abs(im.size[0] - size[0]) <= 2 and abs(im.size[1] - size[1]) <= 2
        assert tuple(im.info["full_size"]) == im.size
    r, g, b = p2.getpixel((850, 1100))
    assert b > 200 and r < 60 and g < 60
    assert min(p1.getpixel((3, 3))) > 150  # the page, not a black bitmap
    assert secs < 5, f"a PDF page took {secs:.1f}s to render"
    assert _reason(open_page, f"{pdf2}#page=3") == "page 3 out of range (file has 2 pages)"


def test_pdf_bytes_upload_first_page_or_page_argument(pdf2):
    data = pdf2.read_bytes()
    assert abs(open_image_bytes(data).size[0] - 2200) <= 2
    assert abs(open_image_bytes(data, page=2).size[0] - 1700) <= 2


def test_pdf_draft_renders_small_but_reports_full_size(pdf2):
    im = open_page(pdf2, draft_size=(540, 380))
    assert im.size[0] >= 540 and im.size[1] >= 380 and im.size[0] < 2200
    assert abs(im.info["full_size"][0] - 2200) <= 2


def test_pdf_page_larger_than_max_pixels_renders_smaller(tmp_path):
    # a 200x200 inch page is 40000x40000 px at 200 dpi: never a memory bomb
    huge = _pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 14400 14400] >>",
        ]
    )
    im = open_image_bytes(huge, max_pixels=4_000_000)
    assert im.size[0] * im.size[1] <= 4_000_000 and im.size[0] > 1900
    assert tuple(im.info["full_size"]) == im.size


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"%PDF-1.4 garbage", "corrupt PDF"),
        (
            _pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]),
            "corrupt PDF or PDF with no pages",
        ),
        (
            _pdf(
                [
                    b"<< /Type /Catalog /Pages 2 0 R >>",
                    b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                    b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
                    b"<< /Filter /Standard /V 1 /R 2 /O <" + b"ab" * 32 + b"> /U <" + b"cd" * 32 + b"> /P -4 >>",
                ],
                b"/Encrypt 4 0 R /ID [<00112233445566778899aabbccddeeff><00112233445566778899aabbccddeeff>] ",
            ),
            "password-protected PDF",
        ),
    ],
    ids=["garbage", "no-pages", "encrypted"],
)
def test_bad_pdfs_are_refused_with_a_reason(tmp_path, data, reason):
    assert _reason(open_image_bytes, data).startswith(reason)
    assert _reason(open_image_bytes, data).startswith(reason)  # the same again (PDFium keeps a last-error state)
    f = tmp_path / "bad.pdf"
    f.write_bytes(data)
    assert _reason(open_page, f).startswith(reason)
    files, bad = expand_inputs([f])  # counting pages failed quietly: the plain path, reported later
    assert files == [str(f)] and bad == []


def test_pdf_suffix_without_pdf_content(tmp_path):
    (tmp_path / "notes.pdf").write_text("not a pdf at all\n")
    assert _reason(open_page, tmp_path / "notes.pdf") == "corrupt PDF (no %PDF header)"
    _page().save(tmp_path / "misnamed.pdf", "PNG")  # an image saved with the wrong name still works
    assert open_page(tmp_path / "misnamed.pdf").size == (600, 428)


def test_folders_pick_up_pdfs_but_training_data_stays_images(tmp_path, pdf2, tiff3):
    _page().save(tmp_path / "a.png")
    files, bad = expand_inputs([tmp_path])
    assert bad == []
    assert sorted(files) == sorted(
        [str(tmp_path / "a.png"), *(f"{pdf2}#page={i}" for i in (1, 2)), *(f"{tiff3}#page={i}" for i in (1, 2, 3))]
    )
    files_glob, _ = expand_inputs([str(tmp_path / "*.pdf")])
    assert files_glob == [f"{pdf2}#page=1", f"{pdf2}#page=2"]
    assert ".pdf" not in IMAGE_SUFFIXES
    assert all(p.suffix != ".pdf" for p in iter_image_files(tmp_path))  # the data indexer's view


# --- sizes and broken files ---------------------------------------------------------------------


def test_small_300px_page_is_answered(tmp_path):
    f = tmp_path / "small.jpg"
    _page((300, 212)).save(f, quality=90)
    _rgb_ok(open_page(f), (300, 212))
    assert "too small" in _reason(open_page, f, min_side=256)  # the floor is still a floor


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_10000px_page_is_answered(tmp_path, fmt):
    im = Image.new("L", (10000, 7000), 255)
    d = ImageDraw.Draw(im)
    for x in range(0, 10000, 200):
        d.line([(x, 0), (x, 6999)], fill=180)
    f = tmp_path / f"big.{fmt.lower()}"
    im.save(f, fmt, **({"compress_level": 1} if fmt == "PNG" else {"quality": 85}))
    del im
    t0 = time.perf_counter()
    out = open_page(f)
    secs = time.perf_counter() - t0
    _rgb_ok(out, (10000, 7000))
    assert secs < 10, f"{fmt} 10000x7000 took {secs:.1f}s"
    if fmt == "JPEG":
        d = open_page(f, draft_size=(540, 380))
        assert d.size == (1250, 875) and d.info["full_size"] == (10000, 7000)


@pytest.mark.parametrize("fmt, suffix", [("PNG", "png"), ("JPEG", "jpg"), ("TIFF", "tif")])
def test_truncated_files_are_refused(tmp_path, fmt, suffix):
    data = _bytes(_page((600, 428)).effect_spread(3), fmt)
    f = tmp_path / f"cut.{suffix}"
    f.write_bytes(data[: len(data) // 2])
    r = _reason(open_page, f)
    assert r.startswith(("corrupt or truncated image data", "corrupt image header", "unreadable file")), r
    assert _reason(open_image_bytes, data[: len(data) // 2]) == r


def test_empty_and_non_image_inputs(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    assert _reason(open_page, tmp_path / "empty.png") == "empty file (0 bytes)"
    assert _reason(open_page, tmp_path / "text.jpg") == "not an image (unknown format)"
    assert _reason(open_image_bytes, b"") == "empty file (0 bytes)"
    assert _reason(open_page, tmp_path / "missing.pdf#page=2").startswith("unreadable file")
    files, bad = expand_inputs([tmp_path / "missing.pdf#page=2"])
    assert files == [] and bad[0].reason == "no such file or folder"


def test_png_pages_reach_the_model_at_the_jpeg_draft_scale(tmp_path):
    """No DCT draft for PNG: it is block-averaged to the scale a JPEG draft decode gives, so both
    formats of one page give nearly the same model input (and a huge PNG is not cropped at full size)."""
    from ecgvit.config import PreprocessConfig
    from ecgvit.data.preprocess import draft_size, load_page_array
    from ecgvit.synth import make_page

    img, _, _ = make_page("normal", np.random.default_rng(0))
    img.save(tmp_path / "p.png")
    img.save(tmp_path / "p.jpg", quality=95)
    cfg = PreprocessConfig(height=192, width=320)
    draft = draft_size(cfg)
    png, jpg = open_page(tmp_path / "p.png", draft_size=draft), open_page(tmp_path / "p.jpg", draft_size=draft)
    assert png.size == jpg.size and png.info["full_size"] == jpg.info["full_size"] == (2213, 1572)
    a, b = load_page_array(tmp_path / "p.png", cfg).array, load_page_array(tmp_path / "p.jpg", cfg).array
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 4.0


@pytest.mark.parametrize("size", [(2213, 1572), (1107, 786), (4426, 3144)])
@pytest.mark.parametrize("subsampling", [0, 2])
def test_fast_jpeg_draft_gives_pils_pixels(tmp_path, size, subsampling, monkeypatch):
    """The OpenCV draft decode (files and uploads) is pixel-identical to PIL's draft decode, at
    the 1/2, 1/4 and 1/8 scales a draft picks; without it the same pixels come from PIL."""
    from ecgvit.data import io as eio

    data = _bytes(_page(size), "JPEG", quality=88, subsampling=subsampling)
    f = tmp_path / "page.jpg"
    f.write_bytes(data)
    calls = []
    real = eio._fast_jpeg_draft_array
    monkeypatch.setattr(eio, "_fast_jpeg_draft_array", lambda *a: calls.append(1) or real(*a))
    fast = open_page(f, draft_size=(540, 380))
    fast_upload = open_image_bytes(data, draft_size=(540, 380))
    as_array = open_page(f, draft_size=(540, 380), as_array=True)  # what prediction asks for
    assert len(calls) == 3
    ref = Image.open(io.BytesIO(data))
    ref.draft("RGB", (540, 380))
    ref = ref.convert("RGB")
    assert fast.size == fast_upload.size == ref.size and fast.info["full_size"] == size
    assert np.array_equal(np.asarray(fast), np.asarray(ref)) and np.array_equal(
        np.asarray(fast_upload), np.asarray(ref)
    )
    assert (
        isinstance(as_array, eio.DecodedPage)
        and as_array.size == ref.size
        and as_array.info == {"full_size": size, "source_mode": "RGB"}
    )
    assert np.array_equal(as_array.rgb, np.asarray(ref)) and not as_array.rgb.flags.writeable
    assert np.array_equal(np.asarray(as_array.image()), np.asarray(ref)) and as_array.image().info["full_size"] == size
    monkeypatch.setattr(eio, "_fast_jpeg_draft_array", lambda *a: None)  # PIL's own path
    assert isinstance(open_page(f, draft_size=(540, 380), as_array=True), Image.Image)
    assert np.array_equal(np.asarray(open_page(f, draft_size=(540, 380))), np.asarray(ref))


def test_fast_jpeg_draft_leaves_rotated_grey_and_cmyk_jpegs_to_pil(tmp_path):
    from ecgvit.data.io import _fast_jpeg_draft

    page = _page((1200, 856))
    ex = Image.Exif()
    ex[0x0112] = 6
    for data in (
        _bytes(page, "JPEG", exif=ex),
        _bytes(page.convert("L"), "JPEG"),
        _bytes(page.convert("CMYK"), "JPEG"),
    ):
        assert _fast_jpeg_draft(Image.open(io.BytesIO(data)), data, (300, 200)) is None
    data = _bytes(page, "JPEG")
    assert _fast_jpeg_draft(Image.open(io.BytesIO(data)), data, (1200, 856)) is None  # no reduction asked
    assert _fast_jpeg_draft(Image.open(io.BytesIO(data)), data, (300, 200)).size == (300, 214)


def test_fast_jpeg_draft_failure_falls_back_to_pils_draft(tmp_path, monkeypatch):
    """When OpenCV cannot decode after PIL's header has been set to draft, PIL's own decode
    still runs at that draft scale and gives the same page."""
    import cv2

    data = _bytes(_page((2213, 1572)), "JPEG", quality=88)
    f = tmp_path / "page.jpg"
    f.write_bytes(data)
    want = np.asarray(open_page(f, draft_size=(540, 380)))
    monkeypatch.setattr(cv2, "imdecode", lambda *a: None)
    got = open_page(f, draft_size=(540, 380))
    assert got.size == (554, 393) and np.array_equal(np.asarray(got), want)
