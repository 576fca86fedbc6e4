"""The HTML report opened in headless Chromium: no console errors, paging works, the overlays are drawn."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import torch

from xai_bench import Passes, profile, report, run
from xai_bench.testing import tiny_cnn

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them with apt-get)",
)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(7, 3, 24, 24, generator=generator)
    stores = {}
    for name, seed in (("model_a", 0), ("model_b", 1)):
        torch.manual_seed(seed)
        model = tiny_cnn().float()
        stores[name] = folder / f"{name}.zarr"
        run(model, images, methods=["saliency", "integrated_gradients"], store=stores[name], targets=[0, 1],
            store_inputs=True, passes=Passes(progress=False))  # fmt: skip
    profile(model, images, layers=["input"], groups=torch.tensor([0, 1, 0, 1, 0, 1, 1]), group_names=["x", "y"],
            store=folder / "profile.zarr")  # fmt: skip
    return report({**stores, "profile": folder / "profile.zarr"}, folder / "report", per_page=3)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000")
    for flag in flags:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def _visible_samples(driver) -> list[str]:
    return [s.get_attribute("id") for s in driver.find_elements("css selector", "section.sample") if s.is_displayed()]


def _wait_for_images(driver) -> None:
    """Scroll through the shown page, as a reader would (lazy images load near the viewport), then wait."""
    from selenium.webdriver.support.ui import WebDriverWait

    height = driver.execute_script("return document.body.scrollHeight")
    for y in range(0, height + 400, 400):
        driver.execute_script(f"window.scrollTo(0, {y})")
    driver.execute_script("window.scrollTo(0, 0)")
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('section.sample:not([hidden]) img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
    )


def test_the_report_pages_through_samples_without_console_errors_and_draws_the_overlays(page, browser):
    from PIL import Image

    browser.get(page.as_uri())
    _wait_for_images(browser)
    assert _visible_samples(browser) == ["s0", "s1", "s2"]  # 7 samples, 3 a page: page 1 of 3
    # The other pages' images are not fetched until their page is shown.
    hidden_loaded = (
        "return [...document.querySelectorAll('section.sample[hidden] img')].filter(i => i.naturalWidth).length"
    )
    assert browser.execute_script(hidden_loaded) == 0
    assert browser.find_element("css selector", ".pager .current").text == "1"
    browser.find_element("css selector", ".pager a.next").click()
    _wait_for_images(browser)
    assert _visible_samples(browser) == ["s3", "s4", "s5"]
    assert browser.current_url.endswith("#page=2")
    browser.find_elements("css selector", ".pager a[data-goto='2']")[0].click()
    _wait_for_images(browser)
    assert _visible_samples(browser) == ["s6"]
    # The map panels are drawn: an overlay has many coloured (non-grey) pixels, not a blank square.
    cell = browser.find_element("css selector", "section#s6 figure.cell:nth-of-type(2) img")
    shot = np.asarray(Image.open(io.BytesIO(cell.screenshot_as_png)).convert("RGB"), dtype=np.int16)
    colourful = (np.abs(shot[..., 0] - shot[..., 2]) > 30).mean()
    assert shot.std() > 10 and colourful > 0.2, (shot.std(), colourful)
    page_shot = np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L"))
    assert (page_shot < 250).mean() > 0.05  # the page as a whole is not blank
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []


def test_a_report_starts_on_the_page_its_address_names_and_shows_the_profiles(page, browser):
    browser.get(page.as_uri() + "#page=3")
    _wait_for_images(browser)
    assert _visible_samples(browser) == ["s6"]
    text = browser.find_element("tag name", "body").text
    for part in ("model_a", "model_b", "Profiles", "saliency", "integrated_gradients", "99th percentile"):
        assert part in text, part
    assert [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"] == []
