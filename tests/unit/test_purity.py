"""The core stays pure: standard library only, and it never reads the clock itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CORE = Path(__file__).parents[2] / "streams"
CLOCK_CALLS = {
    "time.time",
    "time.monotonic",
    "time.perf_counter",
    "datetime.now",
    "datetime.utcnow",
    "date.today",
    "datetime.today",
}


def violations(source: str) -> list[str]:
    """Non-stdlib imports and clock reads in one module's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top != "streams" and top not in sys.stdlib_module_names:
                found.append(f"import {name}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            call = f"{getattr(target, 'id', getattr(target, 'attr', '?'))}.{node.func.attr}"
            if call in CLOCK_CALLS:
                found.append(f"line {node.lineno}: {call}()")
    return found


def test_core_is_standard_library_only_and_clock_free() -> None:
    modules = sorted(CORE.glob("**/*.py"))
    assert len(modules) >= 5
    offenders = {p.name: v for p in modules if (v := violations(p.read_text()))}
    assert offenders == {}


def test_the_check_catches_each_kind_of_violation() -> None:
    source = (
        "import redis\nfrom faust import App\nimport datetime as dt\n"
        "from datetime import datetime\nx = datetime.now()\nimport time\ny = time.time()\n"
    )
    assert violations(source) == [
        "import redis",
        "import faust",
        "line 5: datetime.now()",
        "line 7: time.time()",
    ]
