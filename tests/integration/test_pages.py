"""The pages in a real browser: Debian's Chromium, driven through its ChromeDriver by
Selenium, against ``pulse web`` over the real Redis.

A generated community (plus members whose ids are hostile: markup, quotes, a slash,
right-to-left text) goes through the worker's real processor and writer first. Then
each page must show what the JSON API returns for the same query, the wall must show a
new award within 3 s of its event being applied without reloading, hostile ids must
render as text, and no page may log a console error. Screenshots are kept in
``.local/artifacts/screenshots`` (``SCREENSHOTS_TO=docs/screenshots`` also writes the
README's copies).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import quote
from urllib.request import Request, urlopen

import orjson
import pytest
import redis
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from agents.store import Reader, connect
from agents.web.site import Site
from streams.activity import Activity, parse_activity
from streams.badges import default_catalog
from streams.simulation import generate
from tests.conftest import activity_dict
from tests.integration.conftest import ROOT, Stack, free_port, wait_for
from tests.integration.engine import Engine

COMMUNITY = "pycon-web"
PARTITIONS = 4
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = ROOT / ".local" / "artifacts" / "screenshots"
HOSTILE_MEMBERS = (
    '<script>alert("member")</script>',
    'o\'brien "the" <b>bold</b> & co',
    "שלום-مرحبا-42",
    "slash/and?query#hash%2F",
)
HOSTILE_CHANNEL = "<img src=x onerror=alert(1)>"
HOSTILE_NAME = 'PyCon <Web> "2027" & friends'


def _at(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _history(now: float) -> list[dict[str, Any]]:
    events = list(
        generate(
            3000,
            now=now,
            seed=11,
            span_seconds=20 * 86400,
            communities=(COMMUNITY,),
            members=80,
            id_prefix="web",
        )
    )
    for n, member in enumerate(HOSTILE_MEMBERS):
        for i in range(12):
            events.append(
                activity_dict(
                    event_id=f"hostile-{n}-{i}",
                    type="github.pr_merged" if i == 0 else "chat.message",
                    source="github" if i == 0 else "discord",
                    member_id=member,
                    community=COMMUNITY,
                    channel=HOSTILE_CHANNEL if i else ...,
                    occurred_at=_at(now - 3600 * (i + 1) - n * 60),
                )
            )
    return events


class Pages:
    """The seeded site: the engine that wrote it, and ``pulse web`` serving it."""

    def __init__(self, stack: Stack, prefix: str, tmp: Path) -> None:
        self.now = time.time()
        self.prefix = prefix
        self.engine = Engine(stack.redis_url, prefix, self.now, partitions=PARTITIONS)
        self.feed([parse(e, self.now) for e in _history(self.now)])
        profiles = tmp / "communities.toml"
        profiles.write_text(
            f"[{COMMUNITY}]\nname = {orjson.dumps(HOSTILE_NAME).decode()}\n"
            'url = "https://web.example.org/"\n'
        )
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        env.update(
            {
                "PULSE_REDIS_URL": stack.redis_url,
                "PULSE_REDIS_KEY_PREFIX": prefix,
                "PULSE_COMMUNITIES_FILE": str(profiles),
                "PULSE_PUBLIC_URL": "https://pulse.example.org",
            }
        )
        self.log = (tmp / "web.log").open("wb")
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "agents", "web", "--port", str(self.port)],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._up, 30, "pulse web to answer")

    def _up(self) -> bool:
        assert self.process.poll() is None, "pulse web exited"
        try:
            self.get("/")
        except OSError:
            return False
        return True

    def feed(self, activities: list[Activity]) -> list[str]:
        """Apply ``activities`` (members keyed to partitions); the award ids recorded."""
        by_partition: dict[int, list[Activity]] = {p: [] for p in range(PARTITIONS)}
        for a in activities:
            by_partition[zlib.crc32(a.member_id.encode()) % PARTITIONS].append(a)
        records = []
        for partition, chosen in by_partition.items():
            records += self.engine.records(chosen, partition)
        awards: list[str] = []
        for start in range(0, len(records), 500):
            awards += self.engine.process(records[start : start + 500]).awards
        return awards

    def get(self, path: str) -> tuple[int, str, bytes]:
        request = Request(self.base + path)  # noqa: S310 - our own server
        try:
            with urlopen(request, timeout=10) as reply:  # noqa: S310
                return reply.status, reply.headers["Content-Type"], reply.read()
        except HTTPError as exc:
            with exc:
                return exc.code, exc.headers["Content-Type"], exc.read()

    def api(self, path: str) -> Any:
        status, kind, body = self.get("/api/v1/communities/" + COMMUNITY + path)
        assert status == 200, body
        assert kind == "application/json"
        return orjson.loads(body)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()
        self.engine.close()


def parse(event: dict[str, Any], now: float) -> Activity:
    return parse_activity(event, now=now, max_future_skew=300)


@pytest.fixture(scope="module")
def site(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pages]:
    prefix = f"itw-{uuid.uuid4().hex[:8]}"
    pages = Pages(stack, prefix, tmp_path_factory.mktemp("pages"))
    yield pages
    pages.close()
    client = redis.Redis.from_url(stack.redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


def chrome(javascript: bool = True) -> WebDriver:
    for path in (CHROMIUM, CHROMEDRIVER):
        assert os.path.exists(path), (
            f"{path} is missing: `bash deploy/local/stack.sh install` installs Debian's "
            "chromium and chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="pulse-chromium-")
    # Headless, and no calls home: this machine's network is closed.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    driver._pulse_profile = profile  # type: ignore[attr-defined]
    return driver


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = chrome()
    yield driver
    driver.quit()
    shutil.rmtree(driver._pulse_profile, ignore_errors=True)  # type: ignore[attr-defined]


def open_page(driver: WebDriver, url: str) -> None:
    """Load ``url`` and fail on any console error or warning it logged."""
    driver.get(url)
    problems = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not problems, f"console errors on {url}: {problems}"
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - reading it is the check


def screenshot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    if target := os.environ.get("SCREENSHOTS_TO"):
        Path(ROOT, target).mkdir(parents=True, exist_ok=True)
        shutil.copy(ARTIFACTS / f"{name}.png", Path(ROOT, target, f"{name}.png"))


def board_rows(driver: WebDriver) -> list[tuple[int, str, int]]:
    rows = driver.find_elements(By.CSS_SELECTOR, "table[data-board] tbody tr")
    out = []
    for row in rows:
        cells = row.find_elements(By.TAG_NAME, "td")
        out.append((int(cells[0].text), cells[1].text, int(cells[2].text.replace(",", ""))))
    return out


def api_rows(body: dict[str, Any]) -> list[tuple[int, str, int]]:
    return [(e["rank"], e["member_id"], e["score"]) for e in body["entries"]]


# -- the pages show what the API says --------------------------------------------------


@pytest.mark.parametrize(
    ("query", "api"),
    [
        ("", "/leaderboards/week?top=20"),
        ("?period=day", "/leaderboards/day?top=20"),
        ("?period=all", "/leaderboards/all?top=20"),
        (f"?period=all&channel={quote(HOSTILE_CHANNEL)}", "/leaderboards/all?top=20&channel="),
    ],
)
def test_the_home_page_shows_the_apis_leaderboard(
    site: Pages, browser: WebDriver, query: str, api: str
) -> None:
    if api.endswith("channel="):
        api += quote(HOSTILE_CHANNEL)
    expected = api_rows(site.api(api))
    assert expected, "an empty leaderboard proves nothing"
    open_page(browser, f"{site.base}/c/{COMMUNITY}{query}")
    assert board_rows(browser) == expected
    # The channel switch lists the hostile channel, as text.
    switch = browser.find_element(By.CSS_SELECTOR, ".switch.channels").text
    assert HOSTILE_CHANNEL in switch
    if not query:
        screenshot(browser, "home")


def test_the_home_page_shows_the_latest_awards_and_health(site: Pages, browser: WebDriver) -> None:
    awards = site.api("/awards?limit=10")["awards"]
    assert len(awards) == 10
    open_page(browser, f"{site.base}/c/{COMMUNITY}")
    shown = [
        li.get_attribute("data-award")
        for li in browser.find_elements(By.CSS_SELECTOR, "ul[data-awards] li")
    ]
    assert shown == [a["award_id"] for a in awards]
    client = connect(site.engine.settings.redis_url.reveal())
    try:
        reader = Reader(client, site.prefix)
        health = reader.health(COMMUNITY, time.time())
        trends = reader.trends(COMMUNITY, time.time())
    finally:
        client.close()
    tiles = browser.find_element(By.CSS_SELECTOR, "section.tiles").text
    active = " / ".join(f"{health['active'][w]:,}" for w in ("1d", "7d", "30d"))
    assert active in tiles
    assert f"{health['engagement_ratio'] * 100:.1f} %" in tiles
    # By today's end every member is known: today's share is active today / members.
    assert trends["engaged"][-1] == trends["active"][-1] / health["members"] > 0
    assert sum(trends["new"]) <= health["members"]
    charts = browser.find_elements(By.CSS_SELECTOR, "section.tiles svg.spark")
    assert len(charts) == 4
    # The community's display name comes from PULSE_COMMUNITIES_FILE, as text.
    assert browser.find_element(By.TAG_NAME, "h1").text == HOSTILE_NAME


def test_a_profile_shows_what_the_member_api_returns(site: Pages, browser: WebDriver) -> None:
    top = site.api("/leaderboards/all?top=1")["entries"][0]["member_id"]
    member = site.api(f"/members/{quote(top, safe='')}")
    open_page(browser, f"{site.base}/c/{COMMUNITY}/members/{quote(top, safe='')}")
    assert browser.find_element(By.CSS_SELECTOR, "h1.member").text == top

    def table(selector: str) -> dict[str, str]:
        rows = browser.find_elements(By.CSS_SELECTOR, f"table[{selector}] tr")
        return {
            r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text
            for r in rows
        }

    assert table("data-ranks") == {
        p: "—" if r is None else f"#{r:,}" for p, r in member["ranks"].items()
    }
    assert table("data-windows") == {w: f"{n:,}" for w, n in member["windows"].items()}
    assert table("data-types") == {k: f"{n:,}" for k, n in member["totals"]["by_type"].items()}
    summary = browser.find_element(By.CSS_SELECTOR, "main > p").text
    assert f"{member['totals']['points']:,} points from {member['totals']['events']:,} events" in (
        summary
    )
    assert member["segment"] in summary
    badges = browser.find_elements(By.CSS_SELECTOR, "ul[data-badges] li.badge")
    assert len(badges) == len(member["badges"]) > 0
    for li, badge in zip(badges, member["badges"], strict=True):
        assert badge["awarded_at"][:10] in li.text
        image = li.find_element(By.TAG_NAME, "img")
        # The image loaded (an SVG of the site), it is not a broken icon.
        assert browser.execute_script("return arguments[0].naturalWidth", image) == 128
    days = browser.find_elements(By.CSS_SELECTOR, "svg.calendar rect.on")
    assert len(days) == member["active_days"]
    screenshot(browser, "profile")


def test_the_badge_pages_show_the_apis_holder_counts(site: Pages, browser: WebDriver) -> None:
    catalog = site.api("/badges")["badges"]
    assert sum(sum(b["holders"].values()) for b in catalog) > 0
    open_page(browser, f"{site.base}/c/{COMMUNITY}/badges")
    for badge in catalog:
        card = browser.find_element(By.CSS_SELECTOR, f'article[data-badge="{badge["badge"]}"]')
        for tier, count in badge["holders"].items():
            shown = card.find_element(By.CSS_SELECTOR, f'[data-holders="{tier}"]').text
            assert int(shown.replace(",", "")) == count, (badge["badge"], tier)
    held = max(catalog, key=lambda b: sum(b["holders"].values()))
    open_page(browser, f"{site.base}/c/{COMMUNITY}/badges/{held['badge']}")
    rows = browser.find_elements(By.CSS_SELECTOR, "table[data-holders] tbody tr")
    assert len(rows) == min(100, sum(held["holders"].values()))


# -- the wall ----------------------------------------------------------------------------


def test_the_wall_shows_a_new_award_within_3_seconds_without_reloading(
    site: Pages, browser: WebDriver
) -> None:
    open_page(browser, f"{site.base}/c/{COMMUNITY}/wall")
    board = browser.find_elements(By.CSS_SELECTOR, "ol[data-board] li")
    expected = api_rows(site.api("/leaderboards/day?top=10"))
    assert [li.find_element(By.CLASS_NAME, "who").text for li in board] == [
        member for _, member, _ in expected
    ]
    browser.execute_script("window.pulseKept = 42")
    newcomer = f"wall-newcomer-{uuid.uuid4().hex[:6]}"
    event = activity_dict(
        event_id=f"wall-{newcomer}",
        type="feedback.submitted",
        source="checkin",
        member_id=newcomer,
        community=COMMUNITY,
        occurred_at=_at(time.time() - 1),
        attributes={"rating": 5},
    )
    awards = site.feed([parse(event, time.time())])
    applied = time.monotonic()
    assert len(awards) == 1
    selector = f'ul[data-awards] li[data-award="{awards[0]}"]'
    wait_for(lambda: bool(browser.find_elements(By.CSS_SELECTOR, selector)), 3, "the award")
    seen = time.monotonic() - applied
    item = browser.find_element(By.CSS_SELECTOR, selector)
    assert newcomer in item.text
    assert browser.execute_script("return window.pulseKept") == 42, "the wall reloaded"
    assert browser.find_element(By.CSS_SELECTOR, "[data-status]").text == "live"
    print(f"award visible {seen:.2f} s after its event was applied")
    problems = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not problems
    screenshot(browser, "wall")


# -- hostile input -----------------------------------------------------------------------


@pytest.mark.parametrize("member", HOSTILE_MEMBERS)
def test_hostile_member_ids_render_as_text(site: Pages, browser: WebDriver, member: str) -> None:
    open_page(browser, f"{site.base}/c/{COMMUNITY}/members/{quote(member, safe='')}")
    assert browser.find_element(By.CSS_SELECTOR, "h1.member").text == member
    # Nothing of the id became markup: no bold, no script or image from it.
    assert not browser.find_elements(By.CSS_SELECTOR, "main b, main script, main img[src='x']")
    open_page(browser, f"{site.base}/c/{COMMUNITY}?period=all&channel={quote(HOSTILE_CHANNEL)}")
    links = browser.find_elements(By.CSS_SELECTOR, "table[data-board] a")
    assert member in [a.text for a in links]
    link = next(a for a in links if a.text == member)
    link.click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "h1.member"), 10, "the profile")
    assert browser.find_element(By.CSS_SELECTOR, "h1.member").text == member


def test_unknown_things_are_404_pages_and_bad_parameters_400_pages(
    site: Pages, browser: WebDriver
) -> None:
    cases = {
        "/c/no-such-community": 404,
        f"/c/{COMMUNITY}/members/nobody-at-all": 404,
        f"/c/{COMMUNITY}/badges/no-such-badge": 404,
        f"/c/{COMMUNITY}/badges/helper.diamond.svg": 404,
        f"/c/{COMMUNITY}/awards/{'0' * 32}": 404,
        f"/c/{COMMUNITY}/awards/not-an-id": 404,
        "/nowhere": 404,
        f"/c/{COMMUNITY}?period=year": 400,
        f"/c/{COMMUNITY}?top=0": 400,
        f"/c/{COMMUNITY}?period=day&channel=x": 400,
        f"/c/{COMMUNITY}?at=yesterday": 400,
        "/c/UPPER": 400,
        f"/c/{COMMUNITY}/members/%FF%FE": 400,
    }
    for path, status in cases.items():
        got, kind, body = site.get(path)
        assert (got, kind) == (status, "text/html; charset=utf-8"), path
        assert f"<h1>{status} · " in body.decode(), path
    browser.get(f"{site.base}/c/{COMMUNITY}?period=year")
    assert (
        "period must be one of day, week, month, all"
        in browser.find_element(By.TAG_NAME, "main").text
    )
    # The only console entry is the browser's note of the 400 itself.
    logged = browser.get_log("browser")
    assert [e["message"].split(" - ")[1] for e in logged] == [
        "Failed to load resource: the server responded with a status of 400 (Bad Request)"
    ]
    status, kind, body = site.get("/api/v1/communities/no-such/leaderboards/decade")
    assert (status, kind) == (400, "application/json")
    assert orjson.loads(body)["status"] == 400


def test_the_pages_work_with_javascript_off(site: Pages) -> None:
    driver = chrome(javascript=False)
    try:
        driver.get(f"{site.base}/c/{COMMUNITY}?period=all")
        assert board_rows(driver) == api_rows(site.api("/leaderboards/all?top=20"))
        driver.find_element(By.LINK_TEXT, "week").click()
        assert board_rows(driver) == api_rows(site.api("/leaderboards/week?top=20"))
        driver.get(f"{site.base}/c/{COMMUNITY}/wall")
        assert driver.find_elements(By.CSS_SELECTOR, "ol[data-board] li")
        assert "reload to refresh" in driver.find_element(By.TAG_NAME, "main").text
    finally:
        driver.quit()
        shutil.rmtree(driver._pulse_profile, ignore_errors=True)  # type: ignore[attr-defined]


# -- images, credentials, the server -----------------------------------------------------


def test_badge_images_are_stable_svg(site: Pages) -> None:
    first = site.get(f"/c/{COMMUNITY}/badges/helper.gold.svg")
    again = site.get(f"/c/{COMMUNITY}/badges/helper.gold.svg")
    silver = site.get(f"/c/{COMMUNITY}/badges/helper.silver.svg")
    assert first == again
    assert first[:2] == (200, "image/svg+xml")
    assert first[2].startswith(b"<svg ")
    assert b"<title>Helper (gold)</title>" in first[2]
    assert silver[2] != first[2]
    assert site.get(f"/c/{COMMUNITY}/badges/first-merge.svg")[0] == 200


def test_an_award_is_an_open_badges_3_credential(site: Pages, browser: WebDriver) -> None:
    member = HOSTILE_MEMBERS[0]
    profile = f"{site.base}/c/{COMMUNITY}/members/{quote(member, safe='')}"
    open_page(browser, profile)
    link = browser.find_element(By.CSS_SELECTOR, "a.credential").get_attribute("href")
    assert link is not None
    path = link.removeprefix(site.base)
    status, kind, body = site.get(path)
    assert (status, kind) == (200, "application/ld+json")
    vc = orjson.loads(body)
    assert vc["@context"][0] == "https://www.w3.org/ns/credentials/v2"
    assert vc["@context"][1].startswith("https://purl.imsglobal.org/spec/ob/v3p0/context")
    assert vc["type"] == ["VerifiableCredential", "OpenBadgeCredential"]
    assert vc["id"] == "https://pulse.example.org" + path
    assert vc["issuer"] == {
        "id": f"https://pulse.example.org/c/{COMMUNITY}",
        "type": ["Profile"],
        "name": HOSTILE_NAME,
        "url": "https://web.example.org/",
    }
    award = site.api(f"/members/{quote(member, safe='')}")["badges"][0]
    assert vc["validFrom"] == award["awarded_at"]
    subject = vc["credentialSubject"]
    assert subject["identifier"][0]["identityHash"] == member
    achievement = subject["achievement"]
    assert achievement["type"] == ["Achievement"]
    assert achievement["criteria"]["narrative"]
    assert achievement["image"]["id"].endswith(f"/badges/{award['badge']}.svg")
    assert vc["evidence"][0]["description"] == "event_id hostile-0-0"
    assert "proof" not in vc  # unsigned, as the README says


def test_pulse_web_answers_503_pages_when_redis_is_out_of_reach(stack: Stack) -> None:
    # A real client to a port where nothing listens.
    port = free_port()
    site = Site(lambda: Reader(connect(f"redis://127.0.0.1:{port}/0"), "x"), default_catalog(), "")
    page = site.dispatch(f"/c/{COMMUNITY}", {})
    api = site.dispatch(f"/api/v1/communities/{COMMUNITY}/leaderboards/week", {})
    assert (page.status, page.content_type) == (503, "text/html; charset=utf-8")
    assert b"Redis is unavailable" in page.body
    assert (api.status, api.content_type) == (503, "application/json")


def test_pulse_web_fails_in_one_line_without_redis_or_with_a_busy_port(site: Pages) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env["PULSE_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"

    def web(port: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agents", "web", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    run = web(free_port())
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1
    assert "Redis" in run.stderr
    busy = web(site.port)
    assert busy.returncode == 1
    assert busy.stderr.count("\n") == 1
    assert "cannot listen" in busy.stderr
    assert site.get("/")[0] == 200
    post = Request(site.base + f"/c/{COMMUNITY}", data=b"x", method="POST")  # noqa: S310
    with pytest.raises(HTTPError) as refused:
        urlopen(post, timeout=10)  # noqa: S310
    refused.value.close()
    assert refused.value.code == 405
