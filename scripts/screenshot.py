"""Screenshot of the web page for the README: serve a checkpoint in-process, upload a sticker in headless Chromium.

    .venv/bin/python scripts/screenshot.py --model runs/demo/train/best --image runs/demo/example.png \
        --interpreter offline --store runs/demo/descriptions.sqlite --out docs/img/web.png

Needs Debian's chromium (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder")
    p.add_argument("--image", required=True, type=Path, help="the sticker to upload")
    p.add_argument("--out", type=Path, default=Path("docs/img/web.png"))
    p.add_argument("--interpreter", help="backend spec for on-the-fly descriptions, e.g. offline")
    p.add_argument("--store", help="description store (cache)")
    args = p.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from mghft.serve.app import BackgroundServer, ServeSettings, create_app
    from mghft.serve.predictor import load_predictor

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    predictor = load_predictor(args.model, interpreter=args.interpreter, store=args.store)
    with BackgroundServer(create_app(predictor, ServeSettings())) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1240, "height": 700})
            page.set_default_timeout(60_000)
            page.goto(server.url + "/")
            page.set_input_files("#file", str(args.image))
            page.wait_for_selector("#label:not(:empty)")  # a selector: the page's security policy forbids eval
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            print(f"{args.out}: predicted {page.text_content('#label')} {page.text_content('#confidence')}")
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
