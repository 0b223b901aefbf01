"""The panel in a real browser: Debian's chromium, headless, driven by Playwright.

The standalone app (login with the API token) is served on 127.0.0.1 by werkzeug in a thread
for each test, over a dashboard-like site with a history. A user logs in, reads the status,
sees the charts drawn (the canvases' pixels), finds an item, changes keep_daily and sees the
preview change, saves and sees ``config check`` accept the drop-in, and starts a dry run that
finishes. Every page is screenshot to build/panel-screenshots/ (`make panel-screenshots`
copies three of them to packaging/screenshots/ for the README).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from panel_kit import PANEL, TOKEN, Served, Site, served
from playwright.sync_api import Browser, Page, expect, sync_playwright

from architect_cleanup import cli
from architect_cleanup.api import create_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parents[2] / "build" / "panel-screenshots"
VIEWPORT = {"width": 1100, "height": 820}
#: Roles of the controls a user operates: each must have an accessible name.
CONTROLS = ("textbox", "checkbox", "button", "combobox", "searchbox", "link")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True,
                               timeout=60_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    s = Site(tmp_path).build()
    s.seed_history()
    for k, v in s.environ().items():
        monkeypatch.setenv(k, v)
    return s


@pytest.fixture
def server(site: Site) -> Iterator[Served]:
    app = create_app(token=TOKEN, config_path=str(site.config), configure_logging=False)
    with served(app) as s:
        yield s


@pytest.fixture
def page(browser: Browser, server: Served) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, base_url=server.url)
    context.set_default_timeout(30_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
    finally:
        context.close()
    assert errors == [], errors  # no script error, no CSP violation


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def log_in(page: Page) -> None:
    page.goto(PANEL + "/")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Status", level=1)).to_be_visible()
    assert TOKEN not in page.url


def painted(page: Page, canvas_id: str) -> int:
    """How many pixels of the canvas are not transparent."""
    n: int = page.evaluate(
        """(id) => { const c = document.getElementById(id);
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) n++;
             return n; }""", canvas_id)
    return n


def test_an_operator_reads_the_panel_changes_retention_and_runs_a_dry_run(
        page: Page, site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    page.goto(PANEL + "/login")
    shot(page, "login")
    log_in(page)

    # status: the last run, the timer, the forecast, the dry-run warning
    last = page.locator("#last-run")
    expect(last).to_contain_text("real run")
    expect(last).to_contain_text("Freed")
    expect(page.locator("#space")).to_contain_text("fills in about")
    expect(page.locator("#warnings")).to_contain_text("dry-run mode")
    shot(page, "status")

    # charts: Chart.js from libjs-chart.js draws all three
    page.get_by_role("link", name="Charts").click()
    expect(page.locator("body")).to_have_attribute("data-charts", "drawn")
    for canvas in ("chart-free", "chart-freed", "chart-backups"):
        assert painted(page, canvas) > 2000, canvas
    expect(page.locator("#free-line")).to_contain_text("fills in about")
    shot(page, "charts")

    # the last run's items: search, then the backups per environment
    page.get_by_role("link", name="Last run's items").click()
    expect(page.locator("#items-page")).to_have_text("Page 1 of 3")
    page.get_by_role("searchbox", name="Search paths and reasons").fill("architect_2026")
    row = page.locator("#items-table tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("newest 10 of prod: beyond them")
    page.get_by_role("button", name="Show the backups").click()
    expect(page.get_by_role("table", name="qa: 8 backup(s)")).to_be_visible()
    expect(page.get_by_role("table", name="qa: 8 backup(s)")).to_contain_text(
        "would be removed")
    shot(page, "items")

    # configuration: keep_daily changes the preview; a wrong value is named as you type
    page.get_by_role("link", name="Configuration").click()
    expect(page.locator("body")).to_have_attribute("data-ready", "yes")
    prod = page.get_by_role("group", name="Backups: prod")
    daily = prod.get_by_role("textbox", name="Daily")
    preview = page.locator("#preview")
    daily.fill("3")
    expect(preview).to_contain_text("would remove 21 backups")
    first = preview.inner_text()
    daily.fill("7")
    expect(preview).to_contain_text("would remove 17 backups")
    assert preview.inner_text() != first
    daily.fill("seven")
    expect(page.locator("#e-backups\\.policy\\.prod\\.keep_daily")).to_have_text(
        "must be a whole number, not a string")
    expect(daily).to_have_attribute("aria-invalid", "true")
    daily.fill("7")
    expect(daily).not_to_have_attribute("aria-invalid", "true")
    expect(preview).to_contain_text("would remove 17 backups")
    shot(page, "config")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#save-state")).to_contain_text("Saved")
    assert "keep_daily = 7" in site.dropin.read_text()
    expect(page.locator("#effective")).to_contain_text(str(site.dropin))
    assert cli.main(["--config", str(site.config), "config", "check"]) == 0
    assert "60-panel.toml" in capsys.readouterr().out

    # run now: a dry run finishes; a real run first names what it will remove
    page.get_by_role("link", name="Status").click()
    page.get_by_role("button", name="Start a dry run").click()
    state = page.locator("#run-state")
    expect(state).to_have_attribute("data-state", "finished")
    expect(state).to_contain_text("Finished. Dry run: would free")
    page.get_by_role("button", name="Real run…").click()
    expect(page.locator("#confirm-text")).to_contain_text(
        "This real run will remove 17 backups")
    expect(page.get_by_role("button", name="Remove these now")).to_be_focused()
    shot(page, "run-confirm")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#confirm")).to_be_hidden()
    assert len(list((site.root / "data" / "prod" / "backups").iterdir())) == 20


def unnamed_controls(page: Page) -> list[str]:
    """Lines of the page's accessibility tree for controls without an accessible name."""
    tree = page.locator("body").aria_snapshot()
    rx = re.compile(r"^\s*- ({})(?: \[[^\]]*\])*(?::.*)?$".format("|".join(CONTROLS)))
    return [line for line in tree.splitlines() if rx.match(line)]


def test_every_control_on_every_page_has_an_accessible_name(page: Page) -> None:
    page.goto(PANEL + "/login")
    assert unnamed_controls(page) == []
    log_in(page)
    for link, ready in (("Status", "#last-run dd"), ("Charts", "body[data-charts]"),
                        ("Last run's items", "#items-table tbody tr"),
                        ("Configuration", "body[data-ready]")):
        page.get_by_role("link", name=link).click()
        page.locator(ready).first.wait_for()
        assert unnamed_controls(page) == [], link
    # the form's fields are found by their labels, within their environment's group
    for env in ("prod", "qa", "default"):
        group = page.get_by_role("group", name=f"Backups: {env}" if env != "default" else
                                 "Backups: any other environment (default)")
        for name in ("Keep newest", "Keep last", "Hourly", "Daily", "Weekly", "Monthly",
                     "Yearly", "Keep all within", "Free-space floor", "Keep at least (floor)"):
            expect(group.get_by_role("textbox", name=name, exact=True)).to_have_count(1)
    expect(page.get_by_role("checkbox", name=re.compile("^Dry run"))).to_be_checked()


def focus_ids(page: Page, presses: int) -> list[str]:
    out = []
    for _ in range(presses):
        page.keyboard.press("Tab")
        out.append(page.evaluate("document.activeElement.id || document.activeElement.textContent"
                                 ".trim()"))
    return out


def test_the_panel_works_from_the_keyboard(page: Page) -> None:
    page.goto(PANEL + "/login")
    assert page.evaluate("document.activeElement.id") == "token"  # focused at once
    page.keyboard.type(TOKEN)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Status", level=1)).to_be_visible()
    page.keyboard.press("Tab")  # the skip link comes first, and moves focus to the content
    assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"

    # the configuration form: every field is reached by Tab, in the page's order
    page.goto(PANEL + "/config")
    expect(page.locator("body")).to_have_attribute("data-ready", "yes")
    fields: list[str] = page.eval_on_selector_all(
        "#settings input", "els => els.map(e => e.id)")
    reached = focus_ids(page, len(fields) + 12)
    assert [f for f in reached if f in fields] == fields
    assert "preview-btn" in reached and "save-btn" in reached

    # the status page: a dry run started with the keyboard alone
    page.goto(PANEL + "/")
    expect(page.locator("#last-run")).to_contain_text("real run")
    for _ in range(15):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "run-dry":
            break
    else:
        pytest.fail("the dry-run button is not reachable with Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#run-state")).to_have_attribute("data-state", "finished")
