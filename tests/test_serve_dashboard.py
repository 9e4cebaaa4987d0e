"""The dashboard in a real headless browser (Debian's chromium driven by Selenium through chromedriver).

The proxy answers a real request sequence (misses, hits, a bypass, a guard refusal) from the `openai`
client; the page must show those numbers, fetched from its JSON endpoint by its own script. The test
writes a screenshot (``BSC_DASHBOARD_SCREENSHOT`` names where; by default the test's tmp dir).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")
webdriver = pytest.importorskip("selenium.webdriver")
from bsc.serve import ServeConfig, create_app  # noqa: E402
from bsc.serve.testing import FakeUpstream, running  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser() -> Any:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("no headless browser: apt-get install chromium chromium-driver (.ci/system-packages.txt)")
    # The driver path is given explicitly, so Selenium Manager never runs (and could not download anything).
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_the_dashboard_shows_the_numbers_of_a_real_request_sequence(
    browser: Any, single_thread_default_embedder: Any, tmp_path: Path
) -> None:
    fake = FakeUpstream()
    with running(fake.app()) as upstream:
        app = create_app(ServeConfig(upstream=upstream + "/v1"), embedder=single_thread_default_embedder)
        with running(app) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="sk-demo", max_retries=0)

            def ask(question: str, **kw: Any) -> None:
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": question}], **kw
                )

            ask("What is the capital of France?")  # miss
            ask("Which city is the capital of France?")  # semantic hit
            ask("What is the capital of France?")  # exact hit
            ask("When did World War II end?")  # miss
            ask("When did World War II start?")  # guard refuses the near-miss: miss
            ask("Tell me a joke", n=2)  # bypass

            browser.get(url + "/dashboard")
            WebDriverWait(browser, 30).until(
                lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded")
            )

            def text(element_id: str) -> str:
                return str(browser.find_element(By.ID, element_id).text)

            assert text("hits") == "2"
            assert text("misses") == "3"
            assert text("bypass") == "1"
            assert text("errors") == "0"
            assert text("hit-rate") == "40.0%"
            assert text("entries") == "3"
            assert text("guard-rejections") == "1"
            assert int(text("tokens-saved").replace(",", "")) > 0
            assert 0 < float(text("dollars-saved").removeprefix("$")) < 0.01  # gpt-4o-mini prices
            top = browser.find_element(By.ID, "top-prompts").text
            assert "What is the capital of France?" in top
            rejections = browser.find_element(By.ID, "rejections").text
            assert "When did World War II start?" in rejections and "antonyms" in rejections
            assert browser.find_elements(By.CSS_SELECTOR, "#chart rect")  # the time series is drawn
            screenshot = Path(os.environ.get("BSC_DASHBOARD_SCREENSHOT", tmp_path / "dashboard.png"))
            assert browser.save_screenshot(str(screenshot))
            assert screenshot.stat().st_size > 10_000
