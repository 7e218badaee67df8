"""``python -m kvlab``: the same as the ``kvlab`` command (see :mod:`kvlab.cli`)."""

import sys

from kvlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
