"""``python -m crdr`` runs the command-line interface."""

import sys

from crdr.cli import main

sys.exit(main())
