"""The Dagster UI driven in headless Chromium (Debian's /usr/bin/chromium through Playwright, no
browser download): the Launchpad of export_job and the run page it leads to."""

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, Page, sync_playwright

# Headless on a machine without network beyond loopback: no sandbox (root), no background calls.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
LAUNCHPAD_PATH = "/locations/export_pipelines/jobs/export_job/playground"
TIMEOUT_MS = 60_000


@contextmanager
def chromium() -> Iterator[Browser]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise RuntimeError("the browser tests need Debian's chromium (make test installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Launchpad:
    """The Launchpad of export_job in a fresh browser context (no saved Launchpad sessions)."""

    def __init__(self, browser: Browser, base_url: str):
        self.page: Page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        # Dagster greets a new browser with a newsletter dialog; dismiss it whenever it shows up.
        self.page.add_locator_handler(self.page.get_by_role("button", name="Skip"), lambda skip: skip.click())
        self.page.goto(base_url + LAUNCHPAD_PATH)
        self.page.locator(".CodeMirror").wait_for()
        self.page.wait_for_function("() => document.querySelector('.CodeMirror').CodeMirror.getValue().trim() !== ''")

    def config(self) -> str:
        return self.page.evaluate("() => document.querySelector('.CodeMirror').CodeMirror.getValue()")

    def set_config(self, text: str) -> None:
        self.page.evaluate("(text) => document.querySelector('.CodeMirror').CodeMirror.setValue(text)", text)

    def completions(self, text: str) -> list[str]:
        """What the editor offers (Ctrl-Space) at the end of `text`."""
        self.set_config(text)
        self.page.evaluate(
            "() => { const cm = document.querySelector('.CodeMirror').CodeMirror;"
            " cm.focus(); cm.setCursor(cm.lineCount() - 1, cm.getLine(cm.lineCount() - 1).length); }"
        )
        self.page.keyboard.press("Control+Space")
        hints = self.page.locator(".CodeMirror-hint")
        hints.first.wait_for()
        offered = [text.strip() for text in hints.all_inner_texts()]
        self.page.keyboard.press("Escape")
        return offered

    def launch(self) -> "RunPage":
        """Launch the run and follow the UI to its run page."""
        self.page.get_by_text("No errors").wait_for()
        self.page.get_by_role("button", name="Launch Run").click()
        self.page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}"))
        return RunPage(self.page)


class RunPage:
    def __init__(self, page: Page):
        self.page = page
        self.run_id = page.url.rstrip("/").rsplit("/", 1)[-1]

    def wait_for_success(self, timeout_ms: int = 240_000) -> None:
        self.page.get_by_text("Success", exact=True).first.wait_for(timeout=timeout_ms)

    def step_events(self, step: str) -> str:
        """The text of the event log filtered to one step."""
        self.page.locator("input[placeholder^=Filter]").fill(f"step:{step}")
        self.page.get_by_text(f'Finished execution of step "{step}"').wait_for()
        return self.page.locator("body").inner_text()

    def download_links(self) -> list[str]:
        """The presigned links the page shows (each once; the page repeats some)."""
        links = [link.get_attribute("href") or "" for link in self.page.locator("a[href*='Signature=']").all()]
        return list(dict.fromkeys(links))


class AssetPartition:
    """One partition of an asset on its Partitions tab, with the metadata of its last materialization."""

    def __init__(self, browser: Browser, base_url: str, asset: str, partition: str):
        self.page: Page = browser.new_context(viewport={"width": 1400, "height": 980}).new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.goto(f"{base_url}/assets/{asset}?view=partitions", wait_until="networkidle")
        skip = self.page.get_by_role("button", name="Skip")  # Dagster's greeting to a new browser
        skip.wait_for()
        skip.click()
        skip.wait_for(state="hidden")
        self.page.get_by_text(partition[:8], exact=False).first.click()

    def metadata(self, *names: str) -> dict[str, str]:
        """The values of the named metadata entries, once shown."""
        self.page.get_by_text(names[0], exact=True).wait_for()
        return {
            name: self.page.locator("tr", has=self.page.get_by_text(name, exact=True)).locator("td").nth(1).inner_text()
            for name in names
        }
