"""``python -m bench``: run the benchmark (``bash bench/run.sh`` sets up the environment)."""

import sys

from bench.harness import main

sys.exit(main())
