"""``python -m bench.controller``: see :mod:`bench.controller.main`."""

import sys

from bench.controller import main

sys.exit(main.main())
