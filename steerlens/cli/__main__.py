"""``python -m steerlens.cli``: the same as the ``steerlens`` command."""

import sys

from steerlens.cli.main import main

sys.exit(main())
