"""``python -m supercl`` runs the ``supercl`` command."""

import sys

from supercl.cli import main

sys.exit(main())
