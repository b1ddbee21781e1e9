"""``python -m tests.fuzz``: the fuzz harness's command line (see :mod:`fuzz.run`)."""

import sys

from .run import main

sys.exit(main())
