"""``python -m bench.profile_worker OUT``: a ``pulse worker`` run in-process under pyinstrument.

The harness starts this instead of ``python -m agents worker`` for the profiled S1 run
and stops it with SIGTERM once the last event is applied; Faust then shuts down, and
the profile (the whole main thread, event loop included, so idle time shows up as
``select``) is written as text to OUT and as a JSON summary to OUT.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
from pyinstrument import Profiler

from bench.profiling import summarize


def main() -> int:
    out = Path(sys.argv[1])
    profiler = Profiler(interval=0.002, async_mode="disabled")
    profiler.start()
    try:
        from agents.cli import main as pulse

        pulse(["worker"])
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        profiler.stop()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        summary = summarize(profiler.last_session)
        out.with_suffix(".json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
