"""`pulse import pypi-downloads` and `pulse packages` on the real Redis, with a local
HTTP server that answers like the pypistats.org API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Sandbox

PACKAGES = "requests=pycon-us,Flask=pycon-us,django=django-forum"


def overall(package: str, days: dict[str, int]) -> dict[str, Any]:
    rows = [{"category": "without_mirrors", "date": d, "downloads": n} for d, n in days.items()]
    rows += [{"category": "with_mirrors", "date": d, "downloads": 10 * n} for d, n in days.items()]
    return {"data": rows, "package": package, "type": "overall_downloads"}


def recent(package: str) -> dict[str, Any]:
    return {
        "data": {"last_day": 1, "last_week": 7, "last_month": 30},
        "package": package,
        "type": "recent_downloads",
    }


class Api:
    """Answers /api/packages/<name>/overall|recent; records the paths asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.broken: set[str] = set()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                api.asked.append(self.path)
                _, _, _, name, endpoint = self.path.split("/")
                if name in api.broken:
                    self.send_response(503)
                    self.end_headers()
                    return
                days = {"2026-11-29": 3, "2026-11-30": 5}
                body = overall(name, days) if endpoint == "overall" else recent(name)
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def api() -> Iterator[Api]:
    server = Api()
    yield server
    server.server.shutdown()
    server.server.server_close()


def daily(sandbox: Sandbox, community: str, project: str) -> dict[str, str]:
    key = f"{sandbox.prefix}:{{{community}}}:pypi:daily:{project}"
    return dict(sandbox.redis().hgetall(key))


def test_fetch_from_an_api_keeps_each_configured_package_under_its_community(
    sandbox: Sandbox, api: Api
) -> None:
    sandbox.extra_env["PULSE_PYPI_PACKAGES"] = PACKAGES
    done = sandbox.pulse("import", "pypi-downloads", "--from-url", api.url)
    assert done.returncode == 0, done.stderr
    assert sorted(api.asked) == sorted(
        f"/api/packages/{p}/{e}"
        for p in ("django", "flask", "requests")
        for e in ("overall", "recent")
    )
    # 2026-11-29 is day 20786: without_mirrors counts, not the mirrors'.
    assert daily(sandbox, "pycon-us", "requests") == {"20786": "3", "20787": "5"}
    assert daily(sandbox, "django-forum", "django") == {"20786": "3", "20787": "5"}
    shown = sandbox.pulse("packages", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = {(r["community"], r["package"]): r for r in json.loads(shown.stdout)}
    assert rows[("pycon-us", "flask")]["downloads"] == {"1d": 5, "7d": 8, "30d": 8}
    assert rows[("pycon-us", "flask")]["newest_day"] == "2026-11-30"
    assert rows[("pycon-us", "flask")]["pypistats_recent"] == {
        "last_day": 1,
        "last_week": 7,
        "last_month": 30,
    }
    table = sandbox.pulse("packages", "--community", "django-forum")
    assert "django-forum     django" in table.stdout
    assert "requests" not in table.stdout


def test_an_unreachable_api_imports_nothing(sandbox: Sandbox, api: Api) -> None:
    sandbox.extra_env["PULSE_PYPI_PACKAGES"] = PACKAGES
    api.broken.add("requests")
    done = sandbox.pulse("import", "pypi-downloads", "--from-url", api.url)
    assert done.returncode == 1
    assert "/api/packages/requests/overall: HTTP 503" in done.stderr
    assert "Traceback" not in done.stderr
    assert daily(sandbox, "pycon-us", "flask") == {}


def test_reimporting_replaces_days_and_a_broken_file_changes_nothing(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.extra_env["PULSE_PYPI_PACKAGES"] = PACKAGES
    first = tmp_path / "first.csv"
    first.write_text("date,project,downloads\n2026-11-29,requests,3\n2026-11-30,requests,5\n")
    for _ in range(2):
        assert sandbox.pulse("import", "pypi-downloads", str(first)).returncode == 0
    assert daily(sandbox, "pycon-us", "requests") == {"20786": "3", "20787": "5"}
    fixed = tmp_path / "fixed.csv"
    fixed.write_text("date,project,downloads\n2026-11-30,requests,6\n2026-12-01,requests,1\n")
    assert sandbox.pulse("import", "pypi-downloads", str(fixed)).returncode == 0
    assert daily(sandbox, "pycon-us", "requests") == {"20786": "3", "20787": "6", "20788": "1"}
    broken = tmp_path / "broken.csv"
    broken.write_text("date,project,downloads\n2026-12-02,requests,9\n2026-12-03,requests,-4\n")
    done = sandbox.pulse("import", "pypi-downloads", str(fixed), str(broken))
    assert done.returncode == 3
    assert done.stderr.startswith(f"{broken}:3: downloads: downloads must be a whole number")
    assert "nothing imported" in done.stderr
    assert daily(sandbox, "pycon-us", "requests") == {"20786": "3", "20787": "6", "20788": "1"}
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("date,project,downloads\n2026-11-30,numpy,6\n")
    done = sandbox.pulse("import", "pypi-downloads", str(unknown))
    assert done.returncode == 3
    assert "numpy: not in PULSE_PYPI_PACKAGES" in done.stderr
