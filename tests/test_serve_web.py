"""The web page in a real headless Chromium (the distribution's package): upload a sticker, read the emotion."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mghft.serve.app import BackgroundServer, ServeSettings, create_app
from mghft.serve.predictor import Predictor, load_predictor
from tests.test_serve_api import CLASSES, make_checkpoint, sticker

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# On CI the browser test must run: a missing Chromium is a failure there, not a skip.
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="chromium is not installed (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return load_predictor(make_checkpoint(tmp_path_factory.mktemp("serve-web") / "tiny"), device="cpu")


@pytest.fixture(scope="module")
def server(predictor: Predictor) -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(predictor, ServeSettings(max_pixels=1000 * 1000))) as srv:
        yield srv


@pytest.fixture(scope="module")
def page(server: BackgroundServer) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM is not None, "chromium is not installed: .ci/run installs it (apt-get install chromium)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.set_default_timeout(30_000)
            page.goto(server.url + "/")
            yield page
        finally:
            browser.close()


def test_upload_shows_emotion_bars_views_and_heatmap(page: object, predictor: Predictor, tmp_path: Path) -> None:
    path = tmp_path / "laughing.png"
    sticker(11, (160, 140)).save(path)
    want = predictor.predict([path])[0]
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#label:not(:empty)")  # a selector, not a script: the page's CSP forbids eval
    assert page.text_content("#label") == want.label
    assert page.text_content("#confidence") == f"{100 * want.confidence:.1f}%"
    bars = page.eval_on_selector_all("#probs li", "els => els.map(e => e.dataset.class)")
    assert sorted(bars) == sorted(CLASSES) and bars[0] == want.label
    views = page.eval_on_selector_all("#views li", "els => els.map(e => e.lastChild.textContent)")
    assert views == ["absent"] * 4
    # the heatmap is drawn: reddish, half-transparent pixels over the sticker inside the crop
    with_heat = page.evaluate(_CANVAS_SUM)
    page.click("#show-heat")
    without = page.evaluate(_CANVAS_SUM)
    assert with_heat["red"] > without["red"] and without["alpha"] > 0
    page.click("#show-heat")


def test_written_views_and_errors_reach_the_page(page: object, predictor: Predictor, tmp_path: Path) -> None:
    path = tmp_path / "typed.png"
    sticker(12).save(path)
    page.click("#describe summary")
    page.fill("textarea[data-view='style']", "flat cartoon, pastel colours")
    page.evaluate("document.getElementById('label').textContent = ''")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#label:not(:empty)")  # a selector, not a script: the page's CSP forbids eval
    want = predictor.predict([path], [{"style": "flat cartoon, pastel colours"}])[0]
    assert page.text_content("#label") == want.label
    assert page.text_content("#views li[data-view='style']").endswith("flat cartoon, pastel colours")
    assert "written by you" in page.text_content("#view-source")
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture", encoding="utf-8")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#status.error")
    assert "Error 422" in page.text_content("#status") and "notes.png" in page.text_content("#status")


_CANVAS_SUM = """() => {
  const c = document.getElementById('view');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let red = 0, alpha = 0;
  for (let i = 0; i < d.length; i += 4) { red += d[i] - d[i + 2]; alpha += d[i + 3]; }
  return { red, alpha };
}"""


def test_the_api_link_works_offline(page: object, server: BackgroundServer) -> None:
    """The page's "API" link opens Swagger UI from the service's own files: every other origin is cut off."""
    outside: list[str] = []
    docs = page.context.browser.new_page()  # type: ignore[attr-defined]
    try:

        def offline(route: object) -> None:
            url = route.request.url  # type: ignore[attr-defined]
            if url.startswith(server.url):
                route.continue_()  # type: ignore[attr-defined]
            else:
                outside.append(url)
                route.abort()  # type: ignore[attr-defined]

        docs.set_default_timeout(30_000)
        docs.route("**/*", offline)
        docs.goto(server.url + "/")
        docs.click("footer a:text('API')")
        docs.wait_for_selector(".swagger-ui .info .title")
        assert "mghft sticker emotion service" in docs.text_content(".swagger-ui .info .title")
        docs.wait_for_selector(".opblock-post")
        assert "/v1/predict" in docs.text_content(".swagger-ui")
    finally:
        docs.close()
    assert outside == []


_EMOJI_DRAWN = """() => Array.from(document.querySelectorAll('#emoji img')).map(
  (e) => ({ alt: e.alt, complete: e.complete, width: e.naturalWidth }))"""


def test_a_new_request_clears_the_old_result_and_emoji_are_drawn_from_served_artwork(
    page: object, predictor: Predictor, tmp_path: Path
) -> None:
    for box in page.query_selector_all("#describe textarea"):  # an earlier test may have typed a view
        box.fill("")
    good = tmp_path / "happy.png"
    sticker(13).save(good)
    want = predictor.predict([good])[0]
    page.set_input_files("#file", str(good))
    page.wait_for_selector("#label:not(:empty)")
    assert page.text_content("#label") == want.label
    if want.emoji:  # drawn from the service's own artwork: no emoji font needed
        page.wait_for_function("() => Array.from(document.querySelectorAll('#emoji img')).every(e => e.complete)")
        drawn = page.evaluate(_EMOJI_DRAWN)
        assert [d["alt"] for d in drawn] == list(want.emoji) and all(d["width"] > 0 for d in drawn), drawn
        assert "Twemoji" in page.text_content("#emoji-credit")
    shots = Path(os.environ.get("MGHFT_SCREENSHOTS", tmp_path))  # set it to look at the page
    page.screenshot(path=str(shots / "answer.png"))
    bad = tmp_path / "broken.png"
    bad.write_text("not a picture", encoding="utf-8")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#status.error")
    assert "broken.png" in page.text_content("#status")
    assert page.is_hidden("#result") and page.text_content("#label") == "", "the previous answer stayed"
    assert page.eval_on_selector_all("#probs li", "els => els.length") == 0
    page.screenshot(path=str(shots / "after-error.png"))


def test_the_service_serves_emoji_artwork_by_code_point(server: BackgroundServer) -> None:
    import httpx

    r = httpx.get(server.url + "/emoji/1f604.svg")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml") and b"<svg" in r.content
    for bad in ("..%2Fapp.py", "1f604.png", "zz.svg", "1f604"):
        assert httpx.get(server.url + f"/emoji/{bad}").status_code == 404, bad
    assert "Twemoji" in httpx.get(server.url + "/v1/model").json()["emoji_artwork"]


_CHOSEN = """() => Array.from(document.querySelectorAll('#emotions li')).map((e) => ({
  label: e.dataset.class, probability: Number(e.dataset.probability), text: e.querySelector('.pct').textContent,
  emoji: e.querySelector('.emo').dataset.emoji || null, drawn: Array.from(e.querySelectorAll('.emo img')).map(
    (i) => i.complete && i.naturalWidth > 0) }))"""


def test_several_emotions_per_sticker_are_asked_for_and_each_shown_with_its_probability_and_emoji(
    page: object, predictor: Predictor, tmp_path: Path
) -> None:
    from mghft.selection import select_emotions

    page.evaluate("document.querySelectorAll('#describe textarea').forEach((t) => { t.value = ''; })")  # typed earlier
    path = tmp_path / "several.png"
    sticker(14).save(path)
    want = predictor.predict([path])[0]
    ranked = sorted(want.probabilities.values(), reverse=True)
    floor = round((ranked[1] + ranked[2]) / 2, 2)  # between the second and third: the top two reach it
    assert ranked[2] < floor <= ranked[1], ranked
    page.fill("#top-k", "3")
    page.fill("#min-probability", str(floor))
    page.evaluate("document.getElementById('label').textContent = ''")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#emotions li")
    chosen = select_emotions(want.probabilities, top_k=3, min_probability=floor)
    assert len(chosen) == 2  # the minimum probability, not K, decided: both were sent
    page.wait_for_function("() => Array.from(document.querySelectorAll('#emotions img')).every(e => e.complete)")
    shown = page.evaluate(_CHOSEN)
    assert [(s["label"], s["probability"]) for s in shown] == [
        (e["label"], pytest.approx(e["probability"], abs=1e-5)) for e in chosen
    ]
    assert [s["text"] for s in shown] == [f"{100 * e['probability']:.1f}%" for e in chosen]
    emoji = predictor.emoji or {}
    assert [s["emoji"] for s in shown] == [emoji.get(e["label"]) for e in chosen] and emoji
    assert all(s["drawn"] == [True] for s in shown), shown  # each emoji drawn from the served artwork
    assert page.text_content("#label") == want.label == shown[0]["label"]
    assert "at most 3" in page.text_content("#chosen-rule") and str(floor) in page.text_content("#chosen-rule")
    shots = Path(os.environ.get("MGHFT_SCREENSHOTS", tmp_path))
    page.screenshot(path=str(shots / "several-emotions.png"))
    # a changed setting asks again for the same sticker: top-1 alone
    page.fill("#min-probability", "")
    page.fill("#top-k", "1")
    page.dispatch_event("#top-k", "change")
    page.wait_for_function("() => document.querySelectorAll('#emotions li').length === 1")
    assert page.evaluate(_CHOSEN)[0]["label"] == want.label
    # a value out of range is refused on the page, naming the field, rather than sent and quietly ignored
    page.fill("#top-k", str(len(CLASSES) + 1))
    page.dispatch_event("#top-k", "change")
    page.wait_for_selector("#status.error")
    assert "at most K most probable" in page.text_content("#status") and page.is_hidden("#result")
    page.fill("#top-k", "")
    page.dispatch_event("#top-k", "change")
    page.wait_for_selector("#label:not(:empty)")
    assert page.is_hidden("#chosen-box"), "one emotion asked for: no chosen list"
