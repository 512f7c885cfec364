"""The page and the offline API docs in a real headless Chromium (Debian chromium +
chromium-driver, driven by selenium) against a real medserve process with the committed models.
The browser resolves no host but the loopback test server; its performance log proves that no
request leaves for another origin. Screenshots go to the test's temporary folder."""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from tests.integration.service import running_service, service_env
from tests.tools import require_tool

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service as ChromeService  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
KEY = "page-test-key-0123456789"
SCREENSHOTS = Path(tempfile.gettempdir()) / "medserve-page-screenshots"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("page") / "service.log"
    with running_service(service_env(MEDSERVE_MODEL_DIR=str(ROOT / "models")), log) as (url, _):
        yield url


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("page-keyed") / "service.log"
    env = service_env(MEDSERVE_MODEL_DIR=str(ROOT / "models"), MEDSERVE_API_KEYS=KEY)
    with running_service(env, log) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    binary = require_tool("chromium", "chromium")
    driver_path = require_tool("chromedriver", "chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--window-size=1280,1600",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=ChromeService(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser asked for since the last call (DevTools performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def assert_only_local(driver: Any, origin: str) -> list[str]:
    urls = requested_urls(driver)
    foreign = [u for u in urls if not u.startswith((origin + "/", "data:", "blob:"))]
    assert foreign == [], f"requests to other origins: {foreign}"
    return urls


def wait(driver: Any, timeout: float = 60) -> WebDriverWait:
    return WebDriverWait(driver, timeout)


def screenshot(driver: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def film(tmp: Path) -> Path:
    rng = np.random.default_rng(11)
    y, x = np.mgrid[0:320, 0:280]
    image = 90 + 60 * np.exp(-(((x - 140) / 90) ** 2 + ((y - 170) / 120) ** 2))
    image = (image + rng.normal(0, 6, image.shape)).clip(0, 255).astype(np.uint8)
    path = tmp / "film.png"
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def choose(driver: Any, model: str) -> None:
    select = Select(driver.find_element(By.ID, "model"))
    select.select_by_value(model)
    wait(driver).until(
        lambda d: d.find_element(By.ID, "operating-point").find_elements(By.TAG_NAME, "option")
    )


def open_page(driver: Any, url: str) -> None:
    requested_urls(driver)  # drop what earlier tests left in the log
    driver.get(url + "/")
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))


def test_the_page_loads_nothing_from_elsewhere(browser: Any, server: str) -> None:
    open_page(browser, server)
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model-info .plots img"))
    urls = assert_only_local(browser, server)
    assert any(u.endswith("/ui/page.js") for u in urls)
    assert "Synthetic data" in browser.find_element(By.ID, "model-info").text
    names = [
        o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#model option")
    ]
    assert sorted(names) == ["brain_tumor_mri", "covid_ct", "phantom_tumor_xray", "pneumonia_xray"]


def test_a_film_shows_the_apis_label_and_probability(
    browser: Any, server: str, tmp_path: Path
) -> None:
    path = film(tmp_path)
    open_page(browser, server)
    choose(browser, "pneumonia_xray")
    Select(browser.find_element(By.ID, "operating-point")).select_by_value("high_sensitivity")
    browser.find_element(By.ID, "file").send_keys(str(path))
    wait(browser).until(EC.visibility_of_element_located((By.ID, "result")))
    answer = httpx.post(
        f"{server}/classify/xray",
        params={"operating_point": "high_sensitivity"},
        content=path.read_bytes(),
        timeout=30,
    ).json()
    assert browser.find_element(By.ID, "label").text == answer["label"]
    shown = browser.find_element(By.ID, "probability").text
    assert shown == f"probability {answer['probability']:.4f}"
    assert browser.find_element(By.ID, "point").text.startswith("high_sensitivity:")
    assert not browser.find_element(By.ID, "dicom-row").is_displayed()  # a PNG upload
    screenshot(browser, "classification")
    assert_only_local(browser, server)


def test_explain_shows_the_occlusion_map_at_the_inputs_size(
    browser: Any, server: str, tmp_path: Path
) -> None:
    path = film(tmp_path)
    open_page(browser, server)
    choose(browser, "pneumonia_xray")
    browser.find_element(By.ID, "explain").click()
    browser.find_element(By.ID, "file").send_keys(str(path))
    wait(browser).until(EC.visibility_of_element_located((By.ID, "explanation-figure")))
    wait(browser).until(
        lambda d: d.execute_script("return document.getElementById('explanation').naturalWidth") > 0
    )
    size = browser.execute_script(
        "const i = document.getElementById('explanation'); return [i.naturalWidth, i.naturalHeight]"
    )
    with Image.open(path) as img:
        assert size == [img.width, img.height]  # the heat map is drawn at the input's size
    caption = browser.find_element(By.ID, "explanation-caption").text
    assert caption.startswith("Occlusion sensitivity") and "stride" in caption
    assert "explain" in browser.find_element(By.ID, "timings").text
    screenshot(browser, "explanation")
    assert_only_local(browser, server)


def test_a_segmentation_upload_shows_the_overlay(browser: Any, server: str) -> None:
    open_page(browser, server)
    choose(browser, "brain_tumor_mri")
    browser.find_element(By.ID, "file").send_keys(str(get_testdata_file("MR_small.dcm")))
    wait(browser).until(EC.visibility_of_element_located((By.ID, "overlay-figure")))
    wait(browser).until(
        lambda d: d.execute_script("return document.getElementById('overlay').naturalWidth") > 0
    )
    width = browser.execute_script("return document.getElementById('overlay').naturalWidth")
    assert width == 64  # MR_small is 64 x 64: the overlay is at the input's size
    assert "px" in browser.find_element(By.ID, "mask").text
    assert browser.find_element(By.ID, "dicom-row").is_displayed()  # a DICOM upload
    screenshot(browser, "segmentation")
    assert_only_local(browser, server)


def test_a_bad_file_shows_the_problem_title(browser: Any, server: str, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    open_page(browser, server)
    choose(browser, "pneumonia_xray")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    wait(browser).until(EC.visibility_of_element_located((By.ID, "problem")))
    assert browser.find_element(By.ID, "problem-title").text == "Unsupported media type"
    assert not browser.find_element(By.ID, "result").is_displayed()


def test_the_docs_render_offline(browser: Any, server: str) -> None:
    requested_urls(browser)
    browser.get(server + "/docs")
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 5)
    paths = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
    assert "/classify/xray" in paths
    assert_only_local(browser, server)
    browser.get(server + "/redoc")
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "[data-section-id]"))
    assert_only_local(browser, server)


def test_a_model_page_shows_its_card_and_plots(browser: Any, server: str) -> None:
    requested_urls(browser)
    browser.get(server + "/models/phantom_tumor_xray")
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("phantom_tumor_xray")
    images = browser.find_elements(By.CSS_SELECTOR, ".plots img")
    assert len(images) >= 5
    wait(browser).until(
        lambda d: all(d.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)
    )
    assert_only_local(browser, server)


def test_with_keys_the_page_asks_for_one_and_sends_it(browser: Any, keyed_server: str) -> None:
    requested_urls(browser)
    browser.get(keyed_server + "/")
    wait(browser).until(EC.visibility_of_element_located((By.ID, "api-key")))
    browser.find_element(By.ID, "api-key").send_keys(KEY)
    browser.find_element(By.ID, "key-apply").click()
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    browser.find_element(By.ID, "file").send_keys(str(get_testdata_file("CT_small.dcm")))
    wait(browser).until(EC.visibility_of_element_located((By.ID, "result")))
    assert browser.find_element(By.ID, "label").text
    assert_only_local(browser, keyed_server)
