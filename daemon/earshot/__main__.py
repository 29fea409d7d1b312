"""``python -m earshot`` is the ``earshot`` command."""

import sys

from earshot.cli import main

sys.exit(main())
