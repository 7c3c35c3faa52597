"""``python -m vallum.cli``."""

import sys

from vallum.cli.main import main

sys.exit(main())
