"""``python -m opd_lib.lab``: see :mod:`opd_lib.lab.cli`."""

import sys

from opd_lib.lab.cli import main

if __name__ == "__main__":
    sys.exit(main())
