"""`python -m autorule ...` runs the `autorule` command (for `accelerate launch -m autorule`, subprocesses)."""

import sys

from autorule.cli import main

if __name__ == "__main__":
    sys.exit(main())
