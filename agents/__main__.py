"""``python -m agents``: the same as the ``pulse`` command."""

import sys

from agents.cli import main

sys.exit(main())
