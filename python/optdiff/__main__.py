"""``python -m optdiff``: the command line interface (see :mod:`optdiff.cli`)."""

import sys

from .cli import main

sys.exit(main())
