"""The reproducible performance benchmark of issue 8 (``bash bench/run.sh [--quick]``).

Not part of the test suite: it loads the local stack for minutes and its numbers depend
on the machine. See ``docs/performance.md`` for what each scenario measures.
"""
