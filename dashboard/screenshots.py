"""Drive the cockpit in a real browser: start ``streamlit run dashboard/server.py`` over a home, sign in
through the form in headless Chromium (Selenium), open pages, wait until they have rendered and save
screenshots.

Shared by the browser end-to-end test (``tests/e2e/test_browser.py``, ``make test-browser``) and by
``make screenshots``, which runs this file over the embedded demo::

    python dashboard/screenshots.py --out docs/screenshots     # every page, signed in as the demo lead

The dashboard serves a throw-away copy of the home, so what the pages do meanwhile (the Predict
page's logged answer) never reaches it and the screenshots come out the same run after run.

Needs Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``; the make targets
install them). Not a page of the app: ``app.py`` lists its pages explicitly.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parent.parent
#: the cockpit's server (app.py plus the session cookie's routes)
APP = ROOT / "dashboard" / "server.py"
#: where Debian's ``chromium`` and ``chromium-driver`` packages put them (else looked up on PATH)
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: a fresh profile is added per run; these keep Chromium quiet, offline and fit for containers
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--hide-scrollbars")
#: browser viewport of the screenshots (keeps each PNG well under 300 KB)
WINDOW = (1400, 1000)
#: seconds a page may take to render (the first Overview computes a window's health and drift)
PAGE_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class PageSpec:
    """A page of ``dashboard/app.py``: its ``slug`` (the file name in ``views/`` without ``.py``,
    also the screenshot's name), the ``title`` of its sidebar link and heading, and ``ready``, a text
    the page shows once it has rendered whatever the data."""

    slug: str
    title: str
    ready: str


#: every page of the app, in the sidebar's order
PAGES: tuple[PageSpec, ...] = (
    PageSpec("overview", "Overview", "Playbook:"),
    PageSpec("performance", "Performance", "Performance"),
    PageSpec("drift", "Drift", "Drift"),
    PageSpec("operations", "Operations", "Operations"),
    PageSpec("predict", "Predict", "Run on"),
    PageSpec("review", "Review & labels", "Review & labels"),
    PageSpec("models", "Models", "Models"),
    PageSpec("alerts", "Alerts & audit", "Alerts & audit"),
)


def page_spec(slug: str) -> PageSpec:
    """The :class:`PageSpec` of ``slug`` (a ValueError names the known ones)."""
    for spec in PAGES:
        if spec.slug == slug:
            return spec
    raise ValueError(f"unknown page {slug!r}; pages: {', '.join(s.slug for s in PAGES)}")


# --- the browser ------------------------------------------------------------------------------------


def _find(path: Path, name: str) -> Path | None:
    found = path if path.is_file() else shutil.which(name)
    return Path(found) if found else None


def browser_missing() -> str | None:
    """Why no headless Chromium can run here, or None when it can."""
    for path, name in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")):
        if _find(path, name) is None:
            return (f"{name} not found (neither {path} nor on PATH); install it with "
                    "`apt-get install -y chromium chromium-driver` (make test-browser does)")
    return None


@contextmanager
def chromium(window: tuple[int, int] = WINDOW) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile, driven by the system's chromedriver (no driver
    download); quit and its profile removed on exit."""
    reason = browser_missing()
    if reason:
        raise FileNotFoundError(reason)
    with tempfile.TemporaryDirectory(prefix="skinlesion-chromium-") as profile:
        options = Options()
        options.binary_location = str(_find(CHROMIUM, "chromium"))
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                     f"--window-size={window[0]},{window[1]}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options,
                                  service=Service(str(_find(CHROMEDRIVER, "chromedriver"))))
        try:
            _fit_viewport(driver, window)
            yield driver
        finally:
            driver.quit()


def _fit_viewport(driver: WebDriver, size: tuple[int, int]) -> None:
    """Make the page's viewport (what a screenshot shows) ``size``: headless Chromium counts its
    hidden window frame in ``--window-size``."""
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight];")
    driver.set_window_size(2 * size[0] - int(inner[0]), 2 * size[1] - int(inner[1]))


# --- the dashboard server ---------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running ``streamlit run dashboard/server.py``: its ``url``, ``process`` and ``log`` file
    (stdout and stderr)."""

    url: str
    process: subprocess.Popen
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _wait_healthy(server: Server, timeout: float) -> None:
    """Wait until Streamlit answers its health check; fail early, with the log, if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the dashboard exited with code {server.process.returncode} before "
                               f"serving:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"the dashboard did not answer at {server.url} within {timeout:.0f} s:\n"
                       f"{server.log_tail()}")


def _stop(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM (Streamlit shuts down cleanly on it), then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def serve(home: Path, *, port: int | None = None, env: dict[str, str] | None = None,
          log: Path | None = None, timeout: float = 120.0, stop_timeout: float = 20.0
          ) -> Iterator[Server]:
    """Run the dashboard over ``home`` (SKINLESION_HOME) on ``127.0.0.1:port`` (a free port by
    default) until the block ends, then stop it.

    Inherited ``SKINLESION_*`` variables are dropped, so the home alone decides what is shown;
    ``env`` adds variables (e.g. SKINLESION_THRESHOLDS_FILE). The server's output goes to ``log``
    (a temporary file by default) and is quoted if it fails to start."""
    port = port or free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SKINLESION_")}
    environment |= {"SKINLESION_HOME": str(Path(home).resolve()), **(env or {})}
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true",
               "--browser.gatherUsageStats", "false"]
    with tempfile.TemporaryDirectory(prefix="skinlesion-dashboard-") as tmp:
        log_path = log or Path(tmp) / "streamlit.log"
        with open(log_path, "wb") as out:
            process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=out,
                                       stderr=subprocess.STDOUT)
            server = Server(url=f"http://127.0.0.1:{port}", process=process, log=log_path)
            try:
                _wait_healthy(server, timeout)
                yield server
            finally:
                _stop(process, stop_timeout)


# --- signing in, pages, rendering -------------------------------------------------------------------


def _body_text(driver: WebDriver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def _busy(driver: WebDriver) -> bool:
    """Whether the app is still running its script or drawing: the app's script-run state (the
    running indicator shows only after a delay), a spinner, stale (greyed) elements from the
    previous run, or a chart not drawn yet."""
    return bool(driver.execute_script("""
        const app = document.querySelector('[data-testid="stApp"]');
        if (!app || app.dataset.testScriptState !== 'notRunning') return true;
        if (document.querySelector('[data-testid="stSpinner"]')) return true;
        if (document.querySelector('[data-stale="true"]')) return true;
        for (const chart of document.querySelectorAll('[data-testid="stPlotlyChart"]')) {
            if (!chart.querySelector('svg.main-svg')) return true;
        }
        return false;
    """))


def wait_until(driver: WebDriver, condition: Callable[[WebDriver], object], what: str,
               timeout: float) -> object:
    """``condition(driver)`` once it is truthy; a TimeoutError says ``what`` did not happen and
    quotes the page's text."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25,
                             ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException as err:
        raise TimeoutError(f"{what} within {timeout:.0f} s; the page shows:\n"
                           f"{_body_text(driver)[:2000]}") from err


def wait_rendered(driver: WebDriver, spec: PageSpec, timeout: float = PAGE_TIMEOUT_S) -> None:
    """Wait until the page of ``spec`` shows its heading and ready text and has been idle for a
    moment (Streamlit renders asynchronously, over several runs of the script)."""
    wait_until(driver, lambda d: any(h.text == spec.title for h in d.find_elements(By.TAG_NAME, "h1"))
               and spec.ready in _body_text(d), f"the {spec.title} page did not render", timeout)
    wait_idle(driver, f"the {spec.title} page did not finish running", timeout)


def wait_idle(driver: WebDriver, what: str, timeout: float = PAGE_TIMEOUT_S) -> None:
    """Wait until the app has been idle (no script run, spinner, stale element or undrawn chart)
    for a second; a TimeoutError says ``what`` did not happen."""
    idle_since: list[float] = []

    def settled(d: WebDriver) -> bool:
        if _busy(d) or "Traceback" in _body_text(d):
            idle_since.clear()
            return False
        idle_since.append(time.monotonic())
        return idle_since[-1] - idle_since[0] >= 1.0

    wait_until(driver, settled, what, timeout)


def sign_in(driver: WebDriver, url: str, user: str, password: str,
            timeout: float = PAGE_TIMEOUT_S) -> None:
    """Open the cockpit at ``url`` and sign in through its form; waits for the pages' navigation.
    A rejected sign-in raises PermissionError with the form's message."""
    driver.get(url)
    name = wait_until(driver, lambda d: d.find_element(By.CSS_SELECTOR,
                                                       'input[aria-label="User name"]'),
                      "the sign-in form did not appear", timeout)
    name.send_keys(user)
    driver.find_element(By.CSS_SELECTOR, 'input[aria-label="Password"]').send_keys(password)
    driver.find_element(By.XPATH, '//button[normalize-space(.)="Sign in"]').click()

    def outcome(d: WebDriver) -> str | None:
        if PAGES[0].title in nav_titles(d):  # the app's navigation, drawn once signed in
            return "in"
        return "wrong" if "Wrong user name or password." in _body_text(d) else None

    if wait_until(driver, outcome, "signing in did not finish", timeout) == "wrong":
        raise PermissionError(f"the dashboard refused the sign-in of {user!r} (wrong user name or "
                              "password)")


def nav_titles(driver: WebDriver) -> list[str]:
    """The titles of the pages in the sidebar's navigation (those the user's role may open)."""
    return [_link_title(link) for link in
            driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNavLink"]')]


def _link_title(link: WebElement) -> str:
    """A navigation link's title (its text's last line: a Material icon reads as its name first)."""
    lines = link.text.strip().splitlines()
    return lines[-1].strip() if lines else ""


def open_page(driver: WebDriver, spec: PageSpec, timeout: float = PAGE_TIMEOUT_S) -> None:
    """Open a page through the sidebar (a new URL would start a new, signed-out session) and wait
    until it has rendered."""
    links = [link for link in driver.find_elements(By.CSS_SELECTOR,
                                                   '[data-testid="stSidebarNavLink"]')
             if _link_title(link) == spec.title]
    if not links:
        raise LookupError(f"no {spec.title!r} link in the sidebar (it has: "
                          f"{', '.join(nav_titles(driver))}); the signed-in role may not open it")
    links[0].click()
    wait_rendered(driver, spec, timeout)


def tile_badges(driver: WebDriver) -> dict[str, str]:
    """The status badge of each metric tile, by tile label (``{"Recall (sensitivity)": "RED"}``),
    read from the coloured badge each tile draws before its bold label."""
    badges = driver.execute_script("""
        const out = {};
        for (const badge of document.querySelectorAll('p > span.stMarkdownColoredBackground')) {
            const label = badge.parentElement.querySelector(':scope > strong');
            if (label) out[label.innerText.trim()] = badge.innerText.trim();
        }
        return out;
    """)
    return {str(k): str(v) for k, v in badges.items()}


def screenshot(driver: WebDriver, path: Path) -> Path:
    """Save what the browser shows as a PNG at ``path`` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise RuntimeError(f"the browser could not write the screenshot {path}")
    return path


def click_text(driver: WebDriver, tag: str, text: str) -> None:
    """Click the first ``tag`` element (``button``, ``label``...) whose whole text is ``text``."""
    driver.find_element(By.XPATH, f'//{tag}[normalize-space(.)="{text}"]').click()


def answer_a_queued_case(driver: WebDriver, timeout: float = PAGE_TIMEOUT_S) -> None:
    """On the Predict page: ask the model about the review queue's most uncertain case and scroll
    to its answer (decision, probabilities, where the model looked). The answer is logged like any
    dashboard answer. Leaves the page as it is when no image was retained."""
    click_text(driver, "label", "A case from the review queue")
    queue = ("Case (most uncertain first)", "No retained images in the review queue")
    wait_until(driver, lambda d: any(text in _body_text(d) for text in queue),
               "the Predict page did not show the review queue", timeout)
    wait_idle(driver, "the Predict page did not finish loading the review queue", timeout)
    if queue[1] in _body_text(driver):
        return
    click_text(driver, "button", "Predict")
    wait_until(driver, lambda d: any(h.text == "Answer" for h in d.find_elements(By.TAG_NAME, "h3")),
               "the Predict page showed no answer", timeout)
    wait_idle(driver, "the Predict page did not finish its answer", timeout)
    heading = next(h for h in driver.find_elements(By.TAG_NAME, "h3") if h.text == "Answer")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", heading)
    time.sleep(0.5)  # the scroll is smooth


#: what ``make screenshots`` does on a page before its screenshot, by slug
SHOWCASE: dict[str, Callable[[WebDriver, float], None]] = {"predict": answer_a_queued_case}


def capture(url: str, out_dir: Path, user: str, password: str,
            pages: tuple[PageSpec, ...] = PAGES, window: tuple[int, int] = WINDOW,
            timeout: float = PAGE_TIMEOUT_S,
            before: dict[str, Callable[[WebDriver, float], None]] | None = None) -> list[Path]:
    """Sign in at ``url`` as ``user`` and save ``<out_dir>/<slug>.png`` of each page, in order;
    ``before[slug](driver, timeout)`` runs on a page before its screenshot."""
    saved = []
    with chromium(window) as driver:
        sign_in(driver, url, user, password, timeout)
        for spec in pages:
            open_page(driver, spec, timeout)
            if before and spec.slug in before:
                before[spec.slug](driver, timeout)
            saved.append(screenshot(driver, Path(out_dir) / f"{spec.slug}.png"))
            print(f"{spec.title}: {saved[-1]}", flush=True)
    return saved


# --- make screenshots -------------------------------------------------------------------------------


@contextmanager
def scratch_copy(home: Path) -> Iterator[Path]:
    """A copy of ``home`` in a temporary folder, removed on exit (retained images named by absolute
    path in its store are still read from ``home``)."""
    with tempfile.TemporaryDirectory(prefix="skinlesion-screenshots-") as tmp:
        yield Path(shutil.copytree(home, Path(tmp) / "home"))


def main(argv: list[str] | None = None) -> int:
    """``python dashboard/screenshots.py``: a screenshot of each page over a home (by default the
    embedded demo's; build it first with ``skinlesion demo --build-only``)."""
    sys.path.insert(0, str(ROOT))  # run as a script from a source checkout
    from skinlesion.demo import DEMO_USERS, demo_home, is_built
    from skinlesion.settings import Settings

    lead = next((name, password) for name, role, password in DEMO_USERS if role == "ml_lead")
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--home", type=Path, default=None,
                        help="SKINLESION_HOME to show (default: the demo's, data/demo)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots",
                        help="folder of the PNGs (default: docs/screenshots)")
    parser.add_argument("--user", default=lead[0], help="sign in as (default: the demo ML lead, who "
                                                         "sees every page)")
    parser.add_argument("--password", default=lead[1])
    parser.add_argument("--pages", nargs="+", default=[s.slug for s in PAGES],
                        choices=[s.slug for s in PAGES], help="pages to capture (default: all)")
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--no-answer", dest="answer", action="store_false",
                        help="leave the Predict page empty (by default it answers the review "
                             "queue's most uncertain case; the answer is logged in a copy of the "
                             "home only)")
    args = parser.parse_args(argv)
    home = args.home or demo_home(Settings())
    if args.home is None and not is_built(home):
        parser.error(f"no demo at {home}; build it first with `skinlesion demo --build-only`")
    if not home.is_dir():
        parser.error(f"no home at {home}")
    reason = browser_missing()
    if reason:
        parser.error(reason)
    with scratch_copy(home) as scratch, serve(scratch, port=args.port) as server:
        print(f"dashboard over {home} at {server.url}", flush=True)
        capture(server.url, args.out, args.user, args.password,
                tuple(page_spec(slug) for slug in args.pages),
                before=SHOWCASE if args.answer else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
