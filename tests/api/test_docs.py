"""The API's /docs page works offline: Swagger UI's script and style come from the app itself
(fastapi-offline's bundled files), never from a CDN."""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from skinlesion.api import create_app
from skinlesion.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "dashboard") not in sys.path:  # dashboard/ is a folder of scripts, not a package
    sys.path.insert(0, str(ROOT / "dashboard"))

import screenshots  # noqa: E402  (needs the path above)

MISSING = screenshots.browser_missing()


def _assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_docs_load_every_asset_from_the_app(tmp_path):
    client = TestClient(create_app(Settings(home=tmp_path)))
    page = client.get("/docs")
    assert page.status_code == 200
    assets = _assets(page.text)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        assert asset.startswith("/"), f"{asset} is not served by the app"
        assert client.get(asset).status_code == 200, asset
    assert "cdn" not in page.text.lower()


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
def test_docs_render_in_a_browser_without_network(tmp_path):
    """Chromium with every https request refused (a CDN's) renders the operations list."""
    port = screenshots.free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(home=tmp_path)), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with screenshots.chromium() as driver:
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["https://*"]})
            driver.get(f"http://127.0.0.1:{port}/docs")
            screenshots.wait_until(
                driver, lambda d: d.find_elements(screenshots.By.CSS_SELECTOR, ".opblock"),
                "Swagger UI's operations", 60)
            text = driver.find_element(screenshots.By.TAG_NAME, "body").text
            assert "skinlesion API" in text and "/v1/predictions" in text
    finally:
        server.should_exit = True
        thread.join(10)
