"""Drives the web console in a real headless Chromium (Playwright's Python client, with the
system's chromium: nothing is downloaded). Run by tests/it/console.rs, which starts the mesh and
reads this script's stdout: `KILL` asks it to kill the peer, and it answers `KILLED` on stdin.

Arguments: URL OUT_DIR CHROMIUM THIS_ID PEER_ID PEER_MODEL DOWNLOAD_MODEL MESH_ID
Every check raises (exit status 1) with what it saw; screenshots go to OUT_DIR.
"""

import os
import re
import sys
import time

from playwright.sync_api import expect, sync_playwright

URL, OUT, CHROMIUM, THIS_ID, PEER_ID, PEER_MODEL, DOWNLOAD, MESH_ID = sys.argv[1:9]
# The bound: a killed node leaves the page within 5 s.
GONE_WITHIN_MS = 5000
SLOW_MS = 120_000  # model loads, downloads and answers on a loaded 2-core machine


def shot(page, name):
    page.screenshot(path=os.path.join(OUT, f"{name}.png"), full_page=True)
    print(f"screenshot {name}.png", file=sys.stderr, flush=True)


def tab(page, name):
    page.get_by_role("tab", name=name).click()
    expect(page.locator(f"#panel-{name.lower()}")).to_be_visible()


def main():
    os.makedirs(OUT, exist_ok=True)
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        context = browser.new_context(viewport={"width": 1200, "height": 760}, color_scheme="light")
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(URL)

        # Mesh: both nodes, this one highlighted; the SSE connection is live.
        expect(page.locator("#live")).to_have_text("live", timeout=SLOW_MS)
        mine = page.locator(f'#nodes tr[data-node-id="{THIS_ID}"]')
        peer = page.locator(f'#nodes tr[data-node-id="{PEER_ID}"]')
        expect(mine).to_have_class("mine", timeout=SLOW_MS)
        expect(peer).to_contain_text(PEER_MODEL, timeout=SLOW_MS)
        shot(page, "mesh")

        # Keyboard: arrows move between tabs.
        page.get_by_role("tab", name="Mesh").focus()
        page.keyboard.press("ArrowRight")
        expect(page.get_by_role("tab", name="Models")).to_have_attribute("aria-selected", "true")

        # Models: the peer's model with its replica; a catalog download shows progress.
        expect(page.locator(f'#mesh-models tr[data-model="{PEER_MODEL}"]')).to_contain_text("beta", timeout=SLOW_MS)
        # The name filter narrows the catalog to the model.
        page.locator("#catalog-filter").fill(DOWNLOAD[:10])
        expect(page.locator("#catalog tbody tr")).to_have_count(1)
        row = page.locator(f'#catalog tr[data-catalog="{DOWNLOAD}"]')
        row.get_by_role("button", name="Download").click()
        expect(row.locator("progress")).to_be_visible(timeout=SLOW_MS)
        expect(row).to_contain_text("%", timeout=SLOW_MS)
        percent = row.inner_text()
        shot(page, "models-download")
        expect(row).to_contain_text("installed", timeout=SLOW_MS)
        print(f"download progress seen: {percent!r}", file=sys.stderr, flush=True)

        # Discover: this node's own published offer, with its score terms.
        tab(page, "Discover")
        page.get_by_role("button", name="Search").click()
        offer = page.locator(f'#offers tr[data-mesh-id="{MESH_ID}"]')
        expect(offer).to_be_visible(timeout=SLOW_MS)
        expect(offer.locator(".terms li").first).to_be_visible()
        shot(page, "discover")

        # Chat: the peer's model streams an answer; TTFT and tok/s are shown; Stop works.
        tab(page, "Chat")
        page.locator("#chat-model").select_option(PEER_MODEL)
        page.locator("#chat-max").fill("48")
        page.locator("#chat-input").fill("Write a short poem about the sea.")
        page.locator("#chat-input").press("Enter")
        answer = page.locator(".msg.assistant").last
        expect(page.locator("#chat-stats")).to_contain_text("TTFT", timeout=SLOW_MS)
        expect(answer).not_to_be_empty()
        shot(page, "chat")
        if page.locator("#chat-stop").is_enabled():
            page.locator("#chat-stop").click()
        # Stopped, or done when the answer was quicker than the click; never failed.
        expect(answer).to_have_attribute("data-stage", re.compile("^(stopped|done)$"), timeout=SLOW_MS)
        stage = answer.get_attribute("data-stage")
        print(f"chat {stage}: {page.locator('#chat-stats').inner_text()!r}", file=sys.stderr, flush=True)

        # The peer is killed: its row leaves the page within 5 s.
        tab(page, "Mesh")
        expect(peer).to_be_visible()
        print("KILL", flush=True)
        assert sys.stdin.readline().strip() == "KILLED"
        killed = time.monotonic()
        expect(peer).to_have_count(0, timeout=GONE_WITHIN_MS)
        print(f"peer left the page {time.monotonic() - killed:.2f} s after the kill", file=sys.stderr, flush=True)
        expect(mine).to_be_visible()
        shot(page, "mesh-after-kill")

        # Phone width, dark: the same page, rows as cards.
        phone = browser.new_context(viewport={"width": 390, "height": 760}, color_scheme="dark")
        small = phone.new_page()
        small.goto(URL + "#models")
        small.locator("#catalog-filter").fill(DOWNLOAD[:10])
        expect(small.locator(f'#catalog tr[data-catalog="{DOWNLOAD}"]')).to_contain_text("installed", timeout=SLOW_MS)
        shot(small, "phone-dark-models")
        small.goto(URL + "#mesh")  # the hash alone selects the tab
        expect(small.get_by_role("tab", name="Mesh")).to_have_attribute("aria-selected", "true")
        expect(small.locator(f'#nodes tr[data-node-id="{THIS_ID}"]')).to_be_visible(timeout=SLOW_MS)
        shot(small, "phone-dark-mesh")

        assert not errors, f"errors on the page: {errors}"
        browser.close()
    print("OK", flush=True)


if __name__ == "__main__":
    main()
