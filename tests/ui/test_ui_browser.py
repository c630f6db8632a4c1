"""The page in a real browser: headless Chromium draws a "1" (mouse), a "7" (pen) and a "1" (touch) with
pointer strokes, and every endpoint's panel must show that digit. The screenshot is kept as a test
artifact (its path is printed)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnistctl.ui.server import create_app
from serving.app import serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ANSWER_TIMEOUT_SECONDS = 60

# Strokes as points relative to the pad's centre (the pad is 280x280 CSS pixels).
ONE = [[(0, -95), (0, -40), (0, 20), (0, 95)]]
SEVEN = [[(-75, -90), (0, -90), (75, -90), (45, -30), (15, 30), (-10, 95)]]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM.exists() or shutil.which("chromium"))
        or not (CHROMEDRIVER.exists() or shutil.which("chromedriver")),
        reason="no Chromium here (apt-get install chromium chromium-driver; .ci/run does it in CI)",
    ),
]


@pytest.fixture(scope="module")
def page_url(three_endpoint_outputs: dict[str, Any]) -> Iterator[str]:
    with serve_in_thread(create_app(three_endpoint_outputs, label="ui-test")) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium"))
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,760"):
        options.add_argument(argument)
    # An explicit driver path: Selenium Manager never downloads a browser or driver at test time.
    service = Service(
        executable_path=str(CHROMEDRIVER if CHROMEDRIVER.exists() else shutil.which("chromedriver"))
    )
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _draw(driver: Any, strokes: list[list[tuple[int, int]]], pointer_kind: str) -> None:
    """Draw `strokes` on the pad with pointer actions of `pointer_kind` (mouse, pen or touch)."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    pad = driver.find_element("id", "pad")
    actions = ActionBuilder(driver, mouse=PointerInput(pointer_kind, pointer_kind))
    for stroke in strokes:
        (x, y), *rest = stroke
        actions.pointer_action.move_to(pad, x, y).pointer_down()
        for x, y in rest:
            actions.pointer_action.move_to(pad, x, y)
        actions.pointer_action.pointer_up()
    actions.perform()


def _answers(driver: Any, models: list[str]) -> dict[str, str]:
    """Wait until every panel has answered; model -> predicted class (or the panel's error)."""
    from selenium.webdriver.support.ui import WebDriverWait

    def all_answered(d: Any) -> dict[str, str] | None:
        found: dict[str, str] = {}
        for model in models:
            panel = d.find_element("css selector", f'[data-endpoint="{model}"]')
            digit, error = panel.get_attribute("data-digit"), panel.get_attribute("data-error")
            if digit is None and error is None:
                return None
            found[model] = digit if digit is not None else f"error: {error}"
        return found

    return WebDriverWait(driver, ANSWER_TIMEOUT_SECONDS).until(all_answered)


def test_drawn_one_and_seven_are_read_by_every_endpoint(
    browser: Any, page_url: str, three_endpoint_outputs: dict[str, Any], tmp_path: Path
) -> None:
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.support.ui import WebDriverWait

    models = sorted(three_endpoint_outputs["endpoints"])
    browser.get(page_url)
    WebDriverWait(browser, 20).until(lambda d: d.find_element("tag name", "body").get_attribute("data-ready"))
    assert (
        sorted(
            panel.get_attribute("data-endpoint") for panel in browser.find_elements("css selector", ".panel")
        )
        == models
    )

    _draw(browser, ONE, interaction.POINTER_MOUSE)
    assert _answers(browser, models) == dict.fromkeys(models, "1")

    browser.find_element("id", "clear").click()
    _draw(browser, SEVEN, interaction.POINTER_PEN)
    assert _answers(browser, models) == dict.fromkeys(models, "7")

    screenshot = tmp_path / "ui-seven.png"
    browser.save_screenshot(str(screenshot))
    print(f"screenshot of the page: {screenshot}")
    assert screenshot.stat().st_size > 0

    browser.find_element("id", "clear").click()
    _draw(browser, ONE, interaction.POINTER_TOUCH)  # a finger on a touch screen
    assert _answers(browser, models) == dict.fromkeys(models, "1")


def test_an_uploaded_picture_gets_the_answers_mnistctl_predict_gets_and_a_non_image_a_message(
    browser: Any, page_url: str, three_endpoint_outputs: dict[str, Any], tmp_path: Path, t10k_dir: Path
) -> None:
    from PIL import Image
    from selenium.webdriver.support.ui import WebDriverWait

    from mnistctl.client import client_for
    from mnistctl.images import read_image
    from mnistctl.samples import sample_digits

    digits, _ = sample_digits(1, t10k_dir)
    picture = tmp_path / "held-out-digit.png"  # a held-out test digit, enlarged as a scan would be
    Image.fromarray((digits[0].reshape(28, 28) * 255).astype("uint8")).resize((140, 140)).save(picture)
    endpoints = three_endpoint_outputs["endpoints"]
    expected = {
        model: str(int(client_for(entry).predict(read_image(picture)[None, :])[0].argmax()))
        for model, entry in endpoints.items()
    }

    browser.get(page_url)
    WebDriverWait(browser, 20).until(lambda d: d.find_element("tag name", "body").get_attribute("data-ready"))
    browser.find_element("id", "file").send_keys(str(picture))
    assert _answers(browser, sorted(endpoints)) == expected

    not_a_picture = tmp_path / "notes.txt"
    not_a_picture.write_text("a shopping list, not a digit")
    browser.find_element("id", "file").send_keys(str(not_a_picture))
    message = WebDriverWait(browser, 20).until(lambda d: d.find_element("id", "message").text)
    assert "not a readable image" in message
