"""`bgvid edit`: the correction brush in a real browser (Debian's headless Chromium via Playwright)
on real footage (../shared/media/clips/juggle.mp4, scaled down), with the real `selfie` model.

What a person does is what the tests do: scrub with the keyboard, paint with the mouse on a canvas
shown at half size, paint with a finger, undo, save, close the tab, reopen. What they check is what
a person sees or gets: pixels of the canvas, the saved overrides.json, and the alpha that
`bgvid run --overrides` renders from it."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from _clips import pattern

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
W, H = 384, 216  # the test clip: juggle.mp4 scaled down, 30 frames, a keyframe every 8
# A horizontal remove stroke across the juggler's chest (he stands near x = 220 on every frame).
AIM = [(204.0, 84.0), (236.0, 84.0)]
SIZE, SOFTNESS = 16, 0.3
CORE = (slice(81, 88), slice(206, 235))  # pixels whose centres lie well inside the stroke's hard core


# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def selfie():
    from bgvid.models import cache as _cache
    from bgvid.models import catalog as _catalog

    if _cache.cached_model(_catalog.get_model("selfie")) is None:
        pytest.skip("model 'selfie' not cached: run `bgvid models pull selfie`")
    return "selfie"


@pytest.fixture(scope="module")
def person_clip(tmp_path_factory):
    """juggle.mp4, 30 frames at 384x216, H.264 with a keyframe every 8 frames (so seeking matters)."""
    import cv2
    from conftest import SHARED_MEDIA

    src = SHARED_MEDIA / "clips" / "juggle.mp4"
    if not src.is_file():
        pytest.skip(f"real footage not found at {src}")
    path = tmp_path_factory.mktemp("clip") / "juggle_small.mp4"
    with av.open(str(src)) as inp, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24, options={"g": "8", "keyint_min": "8", "sc_threshold": "0",
                                                             "crf": "18", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i, frame in enumerate(inp.decode(video=0)):
            if i == 30:
                break
            small = cv2.resize(frame.to_ndarray(format="rgb24"), (W, H), interpolation=cv2.INTER_AREA)
            for packet in stream.encode(av.VideoFrame.from_ndarray(small, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium); the editor tests drive it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e .[test])")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Editor:
    """An EditorServer on a background thread plus helpers to drive its page."""

    def __init__(self, clip, overrides, model="selfie"):
        from bgvid.apps.edit import EditorServer

        self.server = EditorServer(clip, overrides=overrides, model=model).start()
        self.url = self.server.url
        self.overrides = Path(overrides)
        self.pages = []

    def open(self, browser, **context):
        ctx = browser.new_context(viewport=context.pop("viewport", {"width": 1200, "height": 760}), **context)
        page = ctx.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.errors = errors
        page.goto(self.url)
        page.wait_for_selector("#view[data-frame='0']")
        self.pages.append(ctx)
        return page

    def close(self):
        for ctx in self.pages:
            try:
                ctx.close()
            except Exception:
                pass
        self.server.close()


@pytest.fixture
def editor_factory(selfie):
    made = []

    def make(clip, overrides):
        ed = Editor(clip, overrides)
        made.append(ed)
        return ed

    yield make
    for ed in made:
        ed.close()


# ------------------------------------------------------------------------------------------ helpers

def goto_frame(page, n: int) -> None:
    """Scrub with the arrow keys, as a person does."""
    current = int(page.input_value("#frame-no"))
    page.locator("#viewport").focus()
    key = "ArrowRight" if n > current else "ArrowLeft"
    for _ in range(abs(n - current)):
        page.keyboard.press(key)
    page.wait_for_selector(f"#view[data-frame='{n}']")


def set_zoom(page, percent: int) -> dict:
    page.fill("#zoom", str(percent))
    page.press("#zoom", "Enter")
    return page.eval_on_selector("#view", "c => c.getBoundingClientRect().toJSON()")


def to_css(rect: dict, point) -> tuple[float, float]:
    return rect["x"] + point[0] * rect["width"] / W, rect["y"] + point[1] * rect["height"] / H


def mouse_stroke(page, rect, points, steps=6) -> None:
    page.mouse.move(*to_css(rect, points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*to_css(rect, p), steps=steps)
    page.mouse.up()


def canvas_grey(page, size=(H, W)) -> np.ndarray:
    """The canvas as the person sees it in the Matte view: [H, W] uint8."""
    page.check("input[name=view][value=matte]")
    data = page.eval_on_selector("#view", """c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = '';
        for (let i = 0; i < d.length; i += 4) s += String.fromCharCode(d[i]);
        return btoa(s);
    }""")
    return np.frombuffer(base64.b64decode(data), dtype=np.uint8).reshape(size)


def save(page) -> None:
    from playwright.sync_api import expect

    page.click("#save")
    expect(page.locator("#status")).to_have_text(re.compile(r"· saved$"))


def http_get(url_or_path: str, port: int, *, headers=None, method="GET", body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, url_or_path, skip_host=True, skip_accept_encoding=True)
        hdrs = {"Host": f"127.0.0.1:{port}", **(headers or {})}
        if body is not None:
            hdrs["Content-Length"] = str(len(body))
        for k, v in hdrs.items():
            if v is not None:
                conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def alpha_of_png_sequence(folder: Path) -> dict[int, np.ndarray]:
    import cv2

    out = {}
    for p in sorted(folder.glob("*.png")):
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        out[int(p.stem)] = img[..., 3].astype(np.float32) / (65535.0 if img.dtype == np.uint16 else 255.0)
    return out


# ------------------------------------------------------------------------------------------ the brush

def test_mouse_stroke_on_a_half_size_canvas_is_saved_in_video_pixels_and_renders_on_its_frames_only(
        person_clip, browser, editor_factory, tmp_path):
    import bgvid
    from bgvid.stages.overrides import Overrides

    overrides = tmp_path / "overrides.json"
    ed = editor_factory(person_clip, overrides)
    page = ed.open(browser)
    goto_frame(page, 15)
    page.check("input[name=range][value=span]")
    page.fill("#from", "10")
    page.fill("#to", "20")
    page.check("input[name=mode][value=remove]")
    page.uncheck("#follow")  # a stroke that stays put: this test is about where it lands, in video pixels
    page.fill("#size", str(SIZE))
    page.fill("#softness", str(SOFTNESS))
    rect = set_zoom(page, 50)
    assert rect["width"] == pytest.approx(W / 2, abs=0.01) and rect["height"] == pytest.approx(H / 2, abs=0.01)
    before = canvas_grey(page)
    assert before[CORE].min() > 128, "the model should see the juggler's chest as foreground"
    page.check("input[name=view][value=overlay]")
    mouse_stroke(page, rect, AIM)
    shown = canvas_grey(page)
    assert shown[CORE].max() == 0  # the preview removes the chest at once
    save(page)

    strokes = json.loads(overrides.read_text())
    assert len(strokes) == 1
    s = strokes[0]
    assert (s["frames"], s["mode"], s["size"], s["softness"]) == ("10-20", "remove", SIZE, SOFTNESS)
    # At half size one CSS pixel is two video pixels: the aimed video pixel comes back within one.
    assert s["points"][0] == pytest.approx(list(AIM[0]), abs=1.0)
    assert s["points"][-1] == pytest.approx(list(AIM[1]), abs=1.0)
    assert all(abs(y - AIM[0][1]) <= 1.0 for _, y in s["points"])

    # What the page shows is what _overrides renders: the server's matte + the saved strokes.
    status, png = http_get(f"/{ed.server.token}/api/matte/15", ed.server.port)
    import cv2

    base = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
    expected = Overrides.load(overrides, width=W, height=H).apply(base, 15)
    assert np.abs(np.rint(expected * 255).astype(int) - shown.astype(int)).max() <= 1
    soft_edge = (expected > 0.02) & (expected < 0.98) & (np.abs(expected - base) > 0.02)
    assert soft_edge.sum() > 20, "the soft edge of the brush takes part in the comparison"

    # `bgvid run --overrides`: alpha 0 under the stroke on frames 10-20, the model's matte around them.
    result = bgvid.remove_background(person_clip, tmp_path / "out", model="selfie", frames="8-22",
                                     overrides=overrides, audio=False)
    assert result.frames == 15
    alphas = alpha_of_png_sequence(tmp_path / "out")
    assert sorted(alphas) == list(range(8, 23))
    for n, a in alphas.items():
        if 10 <= n <= 20:
            assert a[CORE].max() == 0.0, f"frame {n}"
        else:
            assert a[CORE].mean() > 0.5, f"frame {n} must keep the model's matte"
    # ...and frame 15 of the render is what the page showed (within 8-bit rounding and smoothing warm-up).

    assert np.abs(alphas[15] * 255 - shown).max() <= 3
    assert page.errors == []


def test_the_page_rasterises_strokes_exactly_as_bgvid_run(person_clip, browser, editor_factory, tmp_path):
    """The preview reproduces _overrides' rasterisation in JS: every kind of stroke, in list order."""
    import cv2

    from bgvid.stages.overrides import Overrides

    strokes = [
        # wider than the frame: bgvid clamps the diameter to the diagonal (440.6 px), so must the page
        {"frames": "0", "mode": "restore", "size": 5000, "softness": 1.0, "points": [[300, 10]]},
        {"frames": "0", "mode": "remove", "size": 40, "softness": 0.0, "points": [[190.3, 60.7], [250.1, 120.9]]},
        {"frames": "0-3", "mode": "restore", "size": 25.5, "softness": 1.0, "points": [[60, 40]]},
        {"frames": 0, "mode": "restore", "size": 12, "softness": 0.5,
         "points": [[20, 200], [80, 170.25], [140, 205], [140, 205], [200.5, 150]]},
        {"frames": "0", "mode": "remove", "size": 30, "softness": 0.25, "points": [[-10, 100], [30, 110]]},
        {"frames": "0", "mode": "remove", "size": 60, "softness": 0.7, "points": [[370, 10], [400, -20]]},
        {"frames": "0", "mode": "restore", "size": 9, "softness": 0.5, "points": [[220, 100], [226, 103]]},
        {"frames": "5-9", "mode": "remove", "size": 50, "softness": 0, "points": [[100, 100]]},
    ]
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps(strokes))
    ed = editor_factory(person_clip, overrides)
    page = ed.open(browser)
    shown = canvas_grey(page)
    status, png = http_get(f"/{ed.server.token}/api/matte/0", ed.server.port)
    base = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
    expected = np.rint(Overrides.load(overrides, width=W, height=H).apply(base, 0) * 255).astype(int)
    assert np.abs(expected - shown.astype(int)).max() <= 1
    assert (np.abs(expected - np.rint(base * 255)) > 2).sum() > 3000  # the strokes changed a lot of pixels
    assert page.text_content("#status").startswith("8 strokes (7 on this frame)")
    assert page.errors == []


def test_a_stroke_longer_than_bgvid_accepts_goes_on_as_a_new_stroke(person_clip, browser, editor_factory, tmp_path,
                                                                    monkeypatch):
    # bgvid refuses a stroke of more than MAX_POINTS_PER_STROKE points; the page never makes one.
    from bgvid.stages import overrides as _ov

    monkeypatch.setattr(_ov, "MAX_POINTS_PER_STROKE", 6)  # the page reads it from the server
    overrides = tmp_path / "overrides.json"
    ed = editor_factory(person_clip, overrides)
    page = ed.open(browser)
    page.fill("#size", "10")
    rect = set_zoom(page, 100)
    mouse_stroke(page, rect, [(40.0, 40.0), (340.0, 40.0), (340.0, 180.0)], steps=10)
    save(page)
    strokes = json.loads(overrides.read_text())
    assert len(strokes) >= 3 and all(2 <= len(s["points"]) <= 6 for s in strokes[:-1])
    for a, b in zip(strokes[:-1], strokes[1:], strict=True):  # each goes on from where the last one ended
        assert b["points"][0] == a["points"][-1]
    ends = [p for s in strokes for p in (s["points"][0], s["points"][-1])]
    assert ends[0] == pytest.approx([40, 40], abs=1) and ends[-1] == pytest.approx([340, 180], abs=1)
    assert page.errors == []


def test_undo_redo_and_a_bounded_history(person_clip, browser, editor_factory, tmp_path):
    overrides = tmp_path / "overrides.json"
    ed = editor_factory(person_clip, overrides)
    page = ed.open(browser)
    goto_frame(page, 5)
    page.fill("#size", str(SIZE))
    rect = set_zoom(page, 100)
    original = canvas_grey(page)
    mouse_stroke(page, rect, AIM)
    assert canvas_grey(page)[CORE].max() == 0
    page.locator("#viewport").focus()
    page.keyboard.press("Control+z")
    assert np.array_equal(canvas_grey(page), original)  # undo removes the stroke, pixel for pixel
    assert page.text_content("#status").startswith("0 strokes")
    page.keyboard.press("Control+Shift+z")
    assert canvas_grey(page)[CORE].max() == 0  # redo brings it back
    save(page)
    assert len(json.loads(overrides.read_text())) == 1

    # 55 more dabs (clicks) on the grass; undo 60 times: only the last 50 strokes can be undone.
    for k in range(55):
        page.mouse.click(*to_css(rect, (10 + 6 * k, 200)))
    assert page.text_content("#status").startswith("56 strokes")
    for _ in range(60):
        page.keyboard.press("Control+z")
    assert page.text_content("#status").startswith("6 strokes")
    assert page.is_disabled("#undo")
    save(page)
    assert len(json.loads(overrides.read_text())) == 6
    assert page.errors == []


def test_zoom_and_pan_keep_the_brush_on_the_aimed_pixel(person_clip, browser, editor_factory, tmp_path):
    overrides = tmp_path / "overrides.json"
    ed = editor_factory(person_clip, overrides)
    page = ed.open(browser)
    rect0 = set_zoom(page, 100)
    page.locator("#viewport").focus()
    for _ in range(3):
        page.keyboard.press("+")  # 100% -> 195%
    rect1 = page.eval_on_selector("#view", "c => c.getBoundingClientRect().toJSON()")
    assert rect1["width"] == pytest.approx(W * 1.25 ** 3, rel=0.02)
    # Space + drag pans the frame by the distance dragged.
    start = (rect1["x"] + 200, rect1["y"] + 150)
    page.keyboard.down(" ")
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(start[0] - 120, start[1] - 60, steps=5)
    page.mouse.up()
    page.keyboard.up(" ")
    rect2 = page.eval_on_selector("#view", "c => c.getBoundingClientRect().toJSON()")
    assert (rect2["x"] - rect1["x"], rect2["y"] - rect1["y"]) == (pytest.approx(-120, abs=1), pytest.approx(-60, abs=1))
    assert page.text_content("#status").startswith("0 strokes")  # panning painted nothing
    page.fill("#size", str(SIZE))
    mouse_stroke(page, rect2, AIM)
    save(page)
    points = json.loads(overrides.read_text())[0]["points"]
    # At ~2x one CSS pixel is half a video pixel.
    assert points[0] == pytest.approx(list(AIM[0]), abs=0.6) and points[-1] == pytest.approx(list(AIM[1]), abs=0.6)
    assert rect0["width"] == pytest.approx(W, abs=0.01)
    assert page.errors == []


def test_touch_stroke_paints_without_scrolling_the_page(person_clip, browser, editor_factory, tmp_path):
    overrides = tmp_path / "overrides.json"
    ed = editor_factory(person_clip, overrides)
    page = ed.open(browser, viewport={"width": 600, "height": 500}, has_touch=True, is_mobile=True)
    # A long page (as on a phone with the tools below): a finger that is not painting scrolls it.
    page.evaluate("document.body.style.height = '2400px'; document.querySelector('main').style.height = '300px'")
    page.evaluate("""() => { window.seen = []; document.getElementById('viewport').addEventListener(
        'pointerdown', e => window.seen.push([e.pointerType, e.clientX, e.clientY])); }""")
    cdp = page.context.new_cdp_session(page)

    def swipe(x0, y0, x1, y1):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0, "y": y0}]})
        for t in np.linspace(0, 1, 12)[1:]:
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove",
                                                  "touchPoints": [{"x": x0 + (x1 - x0) * t, "y": y0 + (y1 - y0) * t}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        page.wait_for_timeout(300)

    page.fill("#size", str(SIZE))
    page.evaluate("window.scrollTo(0, 0)")
    rect = page.eval_on_selector("#view", "c => c.getBoundingClientRect().toJSON()")
    x0, y = to_css(rect, AIM[0])
    x1, _ = to_css(rect, AIM[1])
    # The stroke: a finger moving up and right over the frame paints and scrolls nothing.
    swipe(x0, y + 15, x1, y - 15)
    assert page.evaluate("window.scrollY") == 0
    assert page.evaluate("window.seen.map(e => e[0])") == ["touch"]
    assert page.text_content("#status").startswith("1 stroke")
    assert canvas_grey(page)[CORE].min() < 128
    # Control: the same swipe on the page below the editor does scroll it (the check above means something).
    swipe(300, 480, 300, 150)
    assert page.evaluate("window.scrollY") > 100
    assert page.errors == []


def test_reopening_continues_and_closing_the_tab_saves(person_clip, browser, editor_factory, tmp_path):
    overrides = tmp_path / "strokes.json"
    overrides.write_text(json.dumps([{"frames": "0-29", "mode": "remove", "size": SIZE, "softness": 0.0,
                                      "points": [list(AIM[0]), list(AIM[1])], "note": "kept"}]))
    ed = editor_factory(person_clip, overrides)
    page = ed.open(browser)
    assert page.text_content("#status").startswith("1 stroke (1 on this frame)")
    assert canvas_grey(page)[CORE].max() == 0  # the earlier stroke is there
    rect = set_zoom(page, 100)
    page.check("input[name=mode][value=restore]")
    page.fill("#size", "30")
    mouse_stroke(page, rect, [(60, 150), (120, 160)])
    assert canvas_grey(page)[150, 80] == 255  # restore paints the grass white
    page.close(run_before_unload=True)  # no Save click: the page saves as it closes
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(json.loads(overrides.read_text())) != 2:
        time.sleep(0.1)
    strokes = json.loads(overrides.read_text())
    assert [s["mode"] for s in strokes] == ["remove", "restore"]
    assert strokes[0]["note"] == "kept"  # keys bgvid ignores survive a save
    while time.monotonic() < deadline and list(overrides.parent.glob(".*tmp*")):
        time.sleep(0.1)
    assert list(overrides.parent.glob(".*tmp*")) == []  # no temporary file left behind


def test_a_frame_that_cannot_be_decoded_says_so_and_the_others_still_work(selfie, browser, editor_factory, tmp_path):
    # MJPEG in Matroska with frame 12 replaced by bytes that are not a JPEG.
    path = tmp_path / "damaged.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuvj420p"
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(pattern(i, 160, 96), format="rgb24").reformat(format="yuvj420p")
            for packet in stream.encode(frame):
                if i == 12:
                    junk = av.Packet(b"not a jpeg " * 20)
                    junk.pts, junk.dts, junk.time_base, junk.stream = packet.pts, packet.dts, packet.time_base, stream
                    junk.is_keyframe = True
                    packet = junk
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    ed = editor_factory(path, tmp_path / "o.json")
    page = ed.open(browser)
    page.fill("#frame-no", "12")
    page.press("#frame-no", "Enter")
    page.wait_for_selector("#message:not([hidden])")
    text = page.text_content("#message")
    assert "Frame 12" in text and "cannot be decoded" in text and "damaged.mkv" in text
    page.locator("#viewport").focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("#view[data-frame='13']")
    assert page.is_hidden("#message")
    assert page.errors == []


# ------------------------------------------------------------------------------------------ strokes that follow

@pytest.fixture(scope="module")
def square_clip(tmp_path_factory):
    """A textured square moving 3 px per frame over a textured background (32 frames, PNG sequence)."""
    from _track_clips import make_square_clip

    return make_square_clip(tmp_path_factory.mktemp("square") / "frames", 32)


@pytest.fixture
def square_editor(square_clip, tmp_path_factory, tmp_path):
    """The editor on the square with a model that sees nothing: every bit of matte is the strokes'."""
    from _track_clips import blind_model

    model = blind_model(tmp_path_factory.mktemp("blind"))
    ed = Editor(square_clip, tmp_path / "overrides.json", model=str(model))
    ed.model_path = str(model)
    yield ed
    ed.close()


def test_a_stroke_painted_on_frame_10_moves_with_the_subject_when_scrubbing_to_frame_30(
        browser, square_editor, square_clip, tmp_path):
    from _track_clips import H as SH
    from _track_clips import W as SW
    from _track_clips import square_at, square_rows

    import bgvid

    ed = square_editor
    page = ed.open(browser)
    goto_frame(page, 10)
    page.check("input[name=range][value=span]")
    page.fill("#from", "10")
    page.fill("#to", "30")
    page.check("input[name=mode][value=restore]")
    page.fill("#size", "10")
    page.fill("#softness", "0")
    assert page.is_checked("#follow")  # painting makes a stroke that follows the picture
    rect = set_zoom(page, 200)
    css = lambda p: (rect["x"] + p[0] * rect["width"] / SW, rect["y"] + p[1] * rect["height"] / SH)  # noqa: E731
    points = square_rows(10)
    page.mouse.move(*css(points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*css(p), steps=8)
    page.mouse.up()
    on10 = canvas_grey(page, (SH, SW))
    assert (on10[square_at(10)] == 255).mean() >= 0.95  # on its key frame: as painted
    goto_frame(page, 30)
    page.wait_for_selector("#view[data-tracked='30']")
    on30 = canvas_grey(page, (SH, SW))
    assert (on30[square_at(30)] >= 230).mean() >= 0.85, (on30[square_at(30)] >= 230).mean()
    assert on30[square_at(10)].max() < 128  # nothing left where it was painted
    assert "1 carried here" in page.text_content("#status")
    save(page)
    (stroke,) = json.loads(ed.overrides.read_text())
    assert (stroke["frames"], stroke["keyframe"]) == ("10-30", 10)
    # What the page shows on frame 30 is what `bgvid run --overrides` renders there.
    alpha = {n: a for n, _, _, a in bgvid.iter_mattes(square_clip, model=ed.model_path, frames="30",
                                                     overrides=ed.overrides, device="cpu")}[30]
    assert np.abs(np.rint(alpha * 255) - on30.astype(float)).max() <= 1

    # Shift+paint on frame 30 adds a key frame to that correction (the drift fix); undo takes it back.
    points = [[x, y + 2] for x, y in square_rows(30)]
    page.check("input[name=view][value=overlay]")
    page.keyboard.down("Shift")
    page.mouse.move(*css(points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*css(p), steps=8)
    page.mouse.up()
    page.keyboard.up("Shift")
    first, second = page.evaluate("window.bgvidEdit.strokes")
    assert second["keyframe"] == 30 and second["frames"] == "10-30" and second["mode"] == "restore"
    assert second["id"] and first["id"] == second["id"]
    page.locator("#viewport").focus()
    page.keyboard.press("Control+z")
    (only,) = page.evaluate("window.bgvidEdit.strokes")
    assert "id" not in only and only["keyframe"] == 10
    page.keyboard.press("Control+Shift+z")
    assert [s.get("id") for s in page.evaluate("window.bgvidEdit.strokes")] == [second["id"]] * 2
    save(page)
    strokes = json.loads(ed.overrides.read_text())
    assert [s["keyframe"] for s in strokes] == [10, 30] and len({s["id"] for s in strokes}) == 1
    on30 = canvas_grey(page, (SH, SW))
    assert (on30[square_at(30)] >= 230).mean() >= 0.9  # frame 30 is now a key frame: exactly as painted
    assert page.errors == []


# ------------------------------------------------------------------------------------------ frames and mattes

def test_frames_and_mattes_in_any_order_match_bgvid_run(selfie, person_clip, tmp_path):
    """The editor decodes by seeking and computes mattes out of order; both must be what `bgvid run`
    (here its iter_mattes, same stages, same defaults) gets for the same frame index."""
    import bgvid
    from bgvid.apps.edit import EditorServer
    from bgvid.io.reader import VideoReader

    with VideoReader(person_clip) as reader:
        frames = [b.rgb[i] for b in reader for i in range(len(b))]
    mattes = {n: a for n, _, _, a in bgvid.iter_mattes(person_clip, model="selfie")}
    with EditorServer(person_clip, overrides=tmp_path / "o.json", model="selfie") as server:
        assert server.frames.count == len(frames) == 30
        order = [17, 3, 29, 0, 8, 7, 16, 15, 24, 1, 2, 23, 9, 10]
        for n in order:
            assert np.array_equal(server.frames.rgb(n), frames[n]), f"frame {n}"
        for n in order:
            # Within 1/255: a frame reached by a jump is warmed up like a `--frames` chunk.
            assert np.abs(server.mattes.matte(n) - mattes[n]).max() <= 1 / 255, f"matte {n}"


def test_an_override_folder_shows_its_png_layers_and_gets_the_strokes(selfie, tmp_path):
    import cv2
    from _clips import make_clip

    from bgvid.apps.edit import EditorServer

    clip = make_clip(tmp_path / "tiny.mp4", width=64, height=48, frames=4)
    folder = tmp_path / "fixes"
    folder.mkdir()
    layer = np.zeros((48, 64, 4), np.uint8)
    layer[10:20, 30:50] = (255, 255, 255, 255)  # restore a box on frames 1-2
    cv2.imwrite(str(folder / "000001-000002.png"), layer)
    png_bytes = (folder / "000001-000002.png").read_bytes()
    with EditorServer(clip, overrides=folder, model="selfie").start() as server:
        def matte(n):
            status, body = http_get(f"/{server.token}/api/matte/{n}", server.port)
            assert status == 200
            return cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)

        assert (matte(1)[10:20, 30:50] == 255).all() and (matte(2)[10:20, 30:50] == 255).all()
        assert not (matte(0)[10:20, 30:50] == 255).all()
        status, _ = http_get(f"/{server.token}/api/strokes", server.port, method="POST",
                             headers={"Content-Type": "application/json"},
                             body=b'[{"frames": "0", "mode": "remove", "size": 8, "softness": 0, "points": [[4, 4]]}]')
        assert status == 200
    assert json.loads((folder / "overrides.json").read_text())[0]["size"] == 8
    assert (folder / "000001-000002.png").read_bytes() == png_bytes
    assert sorted(p.name for p in folder.iterdir()) == ["000001-000002.png", "overrides.json"]


# ------------------------------------------------------------------------------------------ security

@pytest.fixture
def tiny_model(tmp_path):
    """A model written on the spot: the server's routing and checks need one to start, not a real one."""
    from _tiny_model import tiny_model

    return tiny_model(tmp_path)


@pytest.fixture
def tiny_editor(tiny_model, tmp_path):
    from _clips import make_clip

    from bgvid.apps.edit import EditorServer

    clip = make_clip(tmp_path / "tiny.mp4", width=64, height=48, frames=4)
    server = EditorServer(clip, overrides=tmp_path / "o.json", model=str(tiny_model)).start()
    yield server
    server.close()


def test_requests_without_the_token_are_refused(tiny_editor):
    port, token = tiny_editor.port, tiny_editor.token
    assert http_get(f"/{token}/api/info", port)[0] == 200
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", f"/{token}/")
    page = conn.getresponse()
    assert page.status == 200 and page.read().startswith(b"<!doctype html>")
    csp = page.getheader("Content-Security-Policy")  # no inline script, no other origin, no framing
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.getheader("X-Content-Type-Options") == "nosniff" and page.getheader("Cache-Control") == "no-store"
    conn.close()
    for path in ("/", "/api/info", "/edit.js", "/api/frame/0", f"/{token[:-1]}x/api/info", f"/{token.upper()}/",
                 f"/api/info?token={token}", "/favicon.ico"):
        status, body = http_get(path, port)
        assert status == 403, path
        assert b"token" in body
    status, _ = http_get(f"/{token[:-1]}x/api/strokes", port, method="POST", body=b"[]",
                         headers={"Content-Type": "application/json"})
    assert status == 403 and not (Path(tiny_editor.strokes.path)).exists()


def test_path_traversal_is_refused(tiny_editor):
    port, token = tiny_editor.port, tiny_editor.token
    for path in (f"/{token}/../../../../etc/passwd", f"/{token}/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                 f"/{token}/..%2f..%2f..%2fetc%2fpasswd", f"/{token}/api/frame/..%2f..%2fetc%2fpasswd",
                 f"/{token}/edit.js/../../../../pyproject.toml", f"/{token}/static/edit.js",
                 f"/{token}//etc/passwd", f"/{token}/api/frame/0/../../../etc/passwd", "/../" + token + "/",
                 f"/{token}/api/frame/-1", f"/{token}/api/frame/99"):
        status, body = http_get(path, port)
        assert status in (403, 404), path
        assert b"root:" not in body and b"[project]" not in body, path
    status, _ = http_get(f"/{token}/../o.json", port, method="POST", body=b"[]",
                         headers={"Content-Type": "application/json"})
    assert status == 404
    assert not Path(tiny_editor.strokes.path).exists()


def test_other_hosts_and_cross_origin_writes_are_refused(tiny_editor):
    port, token = tiny_editor.port, tiny_editor.token
    stroke = json.dumps([{"frames": "0", "mode": "remove", "size": 5, "softness": 0, "points": [[3, 3]]}]).encode()
    json_type = {"Content-Type": "application/json"}
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host header.
    assert http_get(f"/{token}/api/info", port, headers={"Host": f"evil.example:{port}"})[0] == 403
    assert http_get(f"/{token}/api/info", port, headers={"Sec-Fetch-Site": "cross-site"})[0] == 403
    for headers in ({**json_type, "Origin": "http://evil.example"}, {**json_type, "Origin": "null"},
                    {**json_type, "Sec-Fetch-Site": "cross-site"}, {"Content-Type": "text/plain"}):
        status, _ = http_get(f"/{token}/api/strokes", port, method="POST", body=stroke, headers=headers)
        assert status in (403, 415), headers
    assert not Path(tiny_editor.strokes.path).exists()
    # The page's own save: same origin, JSON.
    status, body = http_get(f"/{token}/api/strokes", port, method="POST", body=stroke,
                            headers={**json_type, "Origin": f"http://127.0.0.1:{port}"})
    assert status == 200 and json.loads(Path(tiny_editor.strokes.path).read_text())[0]["size"] == 5
    # Strokes `bgvid run` would refuse are refused, naming the file, and the saved file stays as it was.
    status, body = http_get(f"/{token}/api/strokes", port, method="POST", headers=json_type,
                            body=b'[{"frames": "3-1", "mode": "remove", "size": 5, "softness": 0, "points": [[1, 1]]}]')
    assert status == 422 and b"o.json" in body and b"reversed" in body
    assert json.loads(Path(tiny_editor.strokes.path).read_text())[0]["frames"] == "0"


def test_the_server_listens_on_loopback_only(tiny_editor):
    port = tiny_editor.port
    assert tiny_editor.httpd.server_address[0] == "127.0.0.1"
    assert tiny_editor.url.startswith(f"http://127.0.0.1:{port}/")
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                listening.append(local.rsplit(":", 1)[0])
    if not listening:
        pytest.skip("/proc/net/tcp not readable here")
    assert listening == ["0100007F"]  # 127.0.0.1, IPv4 only, nothing on 0.0.0.0 or ::
    # And from this machine's own non-loopback address (if it has one) nothing answers.
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect(("10.255.255.255", 1))
        own = probe.getsockname()[0]
        probe.close()
    except OSError:
        own = None
    if own and not own.startswith("127."):
        with pytest.raises(OSError):
            socket.create_connection((own, port), timeout=2).close()


# ------------------------------------------------------------------------------------------ hostile clients

JSON_TYPE = {"Content-Type": "application/json"}


def _stroke_doc(**extra) -> list:
    return [dict({"frames": "0-1", "mode": "remove", "size": 5, "softness": 0.5, "points": [[3, 3], [9, 4]]}, **extra)]


def _short_limits(monkeypatch, idle=1.0, request=3.0):
    from bgvid.apps import edit

    monkeypatch.setattr(edit, "IDLE_SECONDS", idle, raising=False)
    monkeypatch.setattr(edit, "REQUEST_SECONDS", request, raising=False)


def _closed_within(sock, seconds: float) -> tuple[bool, bytes]:
    """Read until the server closes the connection: (closed in time, what it sent)."""
    got = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def test_idle_connections_are_capped_and_dropped(tiny_editor, monkeypatch):
    # 60 idle sockets were 60 threads, each waiting forever for a request line.
    import threading

    from bgvid.apps import edit

    _short_limits(monkeypatch)
    port, before = tiny_editor.port, threading.active_count()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(60)]
    try:
        time.sleep(0.5)
        threads = threading.active_count() - before
        cap = getattr(edit, "MAX_CONNECTIONS", 32)
        assert threads <= cap, threads
        results = [_closed_within(s, 4.0) for s in socks]  # idle limit 1 s: all gone well within 4 s
        assert all(closed for closed, _ in results)
        busy = sum(got.startswith(b"HTTP/1.0 503") for _, got in results)
        assert busy >= 60 - cap
    finally:
        for s in socks:
            s.close()
    assert http_get(f"/{tiny_editor.token}/api/info", port)[0] == 200  # and it still serves
    time.sleep(0.3)
    assert threading.active_count() - before <= 1


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickled"])
def test_a_stalled_or_trickled_upload_is_dropped(tiny_editor, monkeypatch, trickle):
    # A POST claiming 32 MB that then stalls waited forever; one byte at a time must not help.
    _short_limits(monkeypatch, idle=1.0, request=3.0)
    port, token = tiny_editor.port, tiny_editor.token
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(f"POST /{token}/api/strokes HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {32 << 20}\r\n\r\n[".encode())
        start = time.monotonic()
        if trickle:  # a byte every 0.4 s: never idle for a second, but the request has 3 s in all
            closed = False
            while time.monotonic() - start < 8 and not closed:
                try:
                    sock.sendall(b" ")
                except OSError:
                    closed = True
                    break
                closed, _ = _closed_within(sock, 0.4)
        else:
            closed, _ = _closed_within(sock, 8.0)
        assert closed and time.monotonic() - start < 6.0
    finally:
        sock.close()
    assert not Path(tiny_editor.strokes.path).exists()


def _post(editor, body: bytes, headers=None):
    return http_get(f"/{editor.token}/api/strokes", editor.port, method="POST", body=body,
                    headers={**JSON_TYPE, **(headers or {})})


def test_saving_refuses_what_run_refuses_with_the_same_message(tiny_editor):
    from bgvid import InputError
    from bgvid.stages import overrides as _ov

    path = Path(tiny_editor.strokes.path)
    assert _post(tiny_editor, json.dumps(_stroke_doc(note="kept")).encode())[0] == 200
    saved = path.read_bytes()
    many = [[1 + i % 50, 2] for i in range(getattr(_ov, "MAX_POINTS_PER_STROKE", 20_000) + 1)]
    one = b'[{"frames": "%s", "mode": "remove", "size": %s, "softness": 0, "points": [[1, 1]]%s}]'
    bodies = {
        "huge size": one % (b"0", b"9" * 5000, b""),
        "huge frames": one % (b"7" * 5000, b"3", b""),
        "NaN kept": one % (b"0", b"3", b', "note": NaN'),
        "Infinity": one % (b"0", b"3", b', "n": [Infinity]'),
        "long stroke": json.dumps(_stroke_doc(points=many)).encode(),
    }
    for what, body in bodies.items():
        status, reply = _post(tiny_editor, body)
        message = json.loads(reply)["error"]
        assert status == 422 and str(path) in message and "\n" not in message, (what, status, message)
        assert path.read_bytes() == saved, what  # the file is left as it was
        path.write_bytes(body)  # what `bgvid run --overrides` says about the same file
        with pytest.raises(InputError) as info:
            _ov.Overrides.load(path, width=64, height=48)
        assert str(info.value) == message, what
        path.write_bytes(saved)


def test_nothing_but_strict_json_is_written_or_served(tiny_editor, tiny_model, tmp_path):
    # Extra keys with NaN were saved verbatim, and then the page's resp.json() could not parse /api/info.
    from _clips import make_clip

    from bgvid import InputError
    from bgvid.apps.edit import EditorServer

    def strict(data: bytes):
        return json.loads(data, parse_constant=lambda c: pytest.fail(f"{c} in {data[:200]!r}"))

    path = Path(tiny_editor.strokes.path)
    status, _ = _post(tiny_editor, b'[{"frames": "0", "mode": "remove", "size": 3, "softness": 0, '
                                   b'"points": [[1, 1]], "note": {"a": [1, NaN]}}]')
    assert status == 422 and not path.exists()
    assert _post(tiny_editor, json.dumps(_stroke_doc(note={"a": [1, 2.5, None]})).encode())[0] == 200
    strict(path.read_bytes())
    status, info = http_get(f"/{tiny_editor.token}/api/info", tiny_editor.port)
    assert status == 200 and strict(info)["strokes"][0]["note"] == {"a": [1, 2.5, None]}
    # A file someone else wrote with NaN in it: the editor refuses it at start, as `bgvid run` does.
    clip = make_clip(tmp_path / "other.mp4", width=64, height=48, frames=2)
    other = tmp_path / "other.json"
    other.write_text('[{"frames": "0", "mode": "remove", "size": 3, "softness": 0, "points": [[1, 1]], "x": NaN}]')
    with pytest.raises(InputError, match="other.json: stroke \\[0\\]: key x: NaN"):
        EditorServer(clip, overrides=other, model=str(tiny_model))


def test_a_new_overrides_file_gets_the_umask_mode(tiny_editor):
    # mkstemp made every new overrides.json 0600, unlike every other file bgvid writes.
    path = Path(tiny_editor.strokes.path)
    old = os.umask(0o027)
    try:
        assert _post(tiny_editor, json.dumps(_stroke_doc()).encode())[0] == 200
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    path.chmod(0o604)  # an existing file keeps its mode
    assert _post(tiny_editor, json.dumps(_stroke_doc(size=7)).encode())[0] == 200
    assert path.stat().st_mode & 0o777 == 0o604 and json.loads(path.read_text())[0]["size"] == 7
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_fuzz_the_api_with_random_and_hostile_requests(tiny_editor, monkeypatch):
    """Whatever arrives, the server answers with a status and a JSON error (or saves what `bgvid
    run` accepts), never an exception of its own, and keeps serving."""
    from _hostile import hostile_documents

    from bgvid.stages.overrides import Overrides

    _short_limits(monkeypatch, idle=0.5, request=2.0)
    failures = []
    real = tiny_editor.httpd.handle_error
    monkeypatch.setattr(tiny_editor.httpd, "handle_error",
                        lambda request, address: failures.append(sys.exc_info()[1]) or real(request, address))
    port, token = tiny_editor.port, tiny_editor.token
    path = Path(tiny_editor.strokes.path)
    stroke = {"frames": "0", "mode": "remove", "size": 5, "softness": 0.5, "points": [[3, 3]]}
    statuses = {}
    for i, body in enumerate(hostile_documents(seed=7, count=300, stroke=stroke)):
        headers = {}
        if i % 10 == 1:
            headers["Content-Type"] = "application/json; charset=utf-8"
        status, reply = _post(tiny_editor, body, headers)
        statuses[status] = statuses.get(status, 0) + 1
        assert status in (200, 400, 422), (status, body[:200], reply[:200])
        assert set(json.loads(reply)) & {"saved", "error"}
        if status == 200:
            Overrides.load(path, width=64, height=48)  # what the editor saved, `bgvid run` reads
    assert statuses.get(200, 0) > 10 and statuses.get(422, 0) > 10 and statuses.get(400, 0) > 10
    # Raw requests: broken request lines, headers and lengths.
    rng = np.random.default_rng(3)
    raw = [b"GET / HTTP/1.0\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200),
           f"POST /{token}/api/strokes HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {'9' * 5000}\r\n\r\n[]".encode(),
           f"POST /{token}/api/strokes HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
           f"Content-Length: -5\r\n\r\n[]".encode(),
           f"POST /{token}/api/strokes HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
           f"Content-Length: 1_0\r\n\r\n[]".encode(),
           f"POST /{token}/api/strokes HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
           f"Content-Length: 20\r\n\r\n[]".encode(),
           f"GET /{token}/api/frame/{'9' * 5000} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode(),
           f"GET /{token}/api/info HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n" .encode() + b"X: y\r\n" * 200 + b"\r\n"]
    raw += [bytes(rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8)) for _ in range(40)]
    for data in raw:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # all sent: the server sees the end at once (idle drops are tested above)
            closed, reply = _closed_within(sock, 5.0)
            assert closed, data[:100]
            if reply and not reply.startswith(b"HTTP/1."):  # an HTTP/0.9 request: a body alone
                assert "error" in json.loads(reply), reply[:100]
        finally:
            sock.close()
    assert http_get(f"/{token}/api/info", port)[0] == 200
    assert not [f for f in failures if not isinstance(f, (ConnectionError, TimeoutError))], failures


# ------------------------------------------------------------------------------------------ command line

def _bgvid(*args, **kw):
    return subprocess.run([sys.executable, "-m", "bgvid", *map(str, args)], capture_output=True, text=True, **kw)


def test_help_teaches_the_page_and_the_render_step():
    proc = _bgvid("edit", "--help")
    assert proc.returncode == 0
    for text in ("127.0.0.1", "token", "--overrides", "undo", "bgvid run INPUT --overrides", "Ctrl-C"):
        assert text in proc.stdout, text


def test_bad_input_is_one_line_naming_the_file(tmp_path, tiny_model):
    from _clips import make_clip

    proc = _bgvid("edit", tmp_path / "missing.mp4", "--no-browser", "--model", tiny_model)
    assert proc.returncode == 2 and "missing.mp4" in proc.stderr and "Traceback" not in proc.stderr
    clip = make_clip(tmp_path / "c.mp4", frames=3)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"frames": "1", "mode": "erase", "size": 3, "softness": 0, "points": [[1, 1]]}]')
    proc = _bgvid("edit", clip, "--overrides", bad, "--no-browser", "--model", tiny_model)
    assert proc.returncode == 2 and "bad.json" in proc.stderr and "erase" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    # the same parsing at start-up as in `bgvid run`: a 5,000-digit size is one line, not a traceback
    bad.write_text('[{"frames": "1", "mode": "remove", "size": %s, "softness": 0, "points": [[1, 1]]}]' % ("9" * 5000))
    proc = _bgvid("edit", clip, "--overrides", bad, "--no-browser", "--model", tiny_model)
    assert proc.returncode == 2 and "bad.json: stroke [0]: size" in proc.stderr and "5000 digits" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = _bgvid("edit", clip, "--overrides", tmp_path / "strokes.txt", "--no-browser", "--model", tiny_model)
    assert proc.returncode == 2 and "strokes.txt" in proc.stderr


def test_command_prints_the_url_serves_and_stops_cleanly_on_ctrl_c(tmp_path):
    from _clips import make_clip
    from _tiny_model import tiny_model

    clip = make_clip(tmp_path / "c.mp4", frames=3)
    (tmp_path / "model").mkdir()
    model = tiny_model(tmp_path / "model")
    proc = subprocess.Popen([sys.executable, "-m", "bgvid", "edit", str(clip), "--model", str(model), "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/([A-Za-z0-9_-]{20,})/", url)
        assert m, url
        port = int(m.group(1))
        status, body = http_get(f"/{m.group(2)}/", port)
        assert status == 200 and b"edit.js" in body
        body = b'[{"frames": "0-2", "mode": "restore", "size": 9, "softness": 1, "points": [[5, 5]]}]'
        status, _ = http_get(f"/{m.group(2)}/api/strokes", port, method="POST", headers=JSON_TYPE, body=body)
        assert status == 200
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "c_overrides.json holds 1 stroke" in err
    assert json.loads((tmp_path / "c_overrides.json").read_text())[0]["mode"] == "restore"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4", "c_overrides.json", "model"]
