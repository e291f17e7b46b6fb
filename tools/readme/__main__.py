"""``python -m tools.readme [--check]``."""

import sys

from tools.readme.generate import main

sys.exit(main())
