"""``python -m namerd.ctl``: the same as the ``namerctl`` command."""

from __future__ import annotations

import sys

from namerd.ctl.cli import main

sys.exit(main())
