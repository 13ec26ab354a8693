"""The page of `pipe serve` in a real browser: headless Chromium (selenium + chromedriver)
uploads two drafts, gets them ranked against the account's usual level, and shows the
heat map and weighted words of a uhan run; a caption with markup is shown as text. The
final screenshot is kept (docs/serve.png is one). Skipped only where no Chromium and
chromedriver are installed (.ci/run installs them)."""
from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from tests._end_to_end import TINY, synth_runs

from pipeline.data.contract import load_posts

pytestmark = pytest.mark.slow  # builds runs on synth data and starts servers

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "chromium-driver")


def _which(names):
    return next((shutil.which(n) for n in names if shutil.which(n)), None)


@pytest.fixture(scope="module")
def server(tmp_path_factory, one_thread):
    import uvicorn

    from pipeline.serve.app import create_app
    from pipeline.serve.engine import Engine

    root = tmp_path_factory.mktemp("page")
    cache, runs = synth_runs(root, 64, (("uhan", "uhan", TINY),))
    app = create_app([Engine(runs / "uhan", cache=cache, device="cpu")])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}/", "posts": load_posts("train", cache), "root": root}
    srv.should_exit = True
    t.join(10)


def test_upload_rank_and_heat_map_in_chromium(server, tmp_path):
    browser, driver_path = _which(BROWSERS), _which(DRIVERS)
    if browser is None or driver_path is None:
        pytest.skip("no headless Chromium and chromedriver on this machine (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1400"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        posts = server["posts"].filter(pl.col("image").is_not_null())
        user = posts["user_id"][0]
        d.get(server["url"])
        wait = WebDriverWait(d, 60)
        wait.until(lambda drv: drv.find_elements(By.CSS_SELECTOR, "#run option"))
        account = d.find_element(By.ID, "user")
        account.clear()
        account.send_keys(user)
        for im in posts["image"].head(2).to_list():
            d.find_element(By.ID, "files").send_keys(str(Path(im).resolve()))
        captions = d.find_elements(By.CSS_SELECTOR, "#drafts input[type=text]")
        assert len(captions) == 2
        captions[0].send_keys(posts["title"][0] or "a sunny beach")
        captions[1].send_keys("<img src=x onerror=alert(1)> night city")
        d.find_element(By.ID, "go").click()
        wait.until(lambda drv: len(drv.find_elements(By.CSS_SELECTOR, "#ranked li")) == 2)
        wait.until(lambda drv: len(drv.find_elements(By.CSS_SELECTOR, "img.heatmap")) == 2)
        wait.until(lambda drv: drv.find_elements(By.CSS_SELECTOR, ".words .word"))
        items = d.find_elements(By.CSS_SELECTOR, "#ranked li")
        assert [i.find_element(By.CLASS_NAME, "rank").text for i in items] == ["#1", "#2"]
        scores = [float(i.find_element(By.CLASS_NAME, "score").text.split()[1]) for i in items]
        assert scores == sorted(scores, reverse=True)
        assert "usual level" in d.find_element(By.ID, "status").text
        assert all(h.get_attribute("naturalWidth") not in (None, "0")
                   for h in d.find_elements(By.CSS_SELECTOR, "img.heatmap"))
        # the markup in a caption is text on the page, not an element
        assert "<img src=x onerror=alert(1)>" in d.find_element(By.ID, "ranked").text
        assert not d.find_elements(By.CSS_SELECTOR, "#ranked img[src='x']")
        shot = tmp_path / "serve.png"
        d.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        shutil.copy(shot, server["root"] / "serve.png")  # kept for a look after the run
    finally:
        d.quit()
