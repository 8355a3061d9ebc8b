"""`python -m babysit` runs the CLI."""

import sys

from babysit.cli import main

sys.exit(main())
