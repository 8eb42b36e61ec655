"""Verifier throughput benchmark; the same as `autorule bench verifier`.

    python benchmarks/verifier.py --rules 20 --conversations 16 --json
"""

import sys

from autorule.cli.app import main

if __name__ == "__main__":
    sys.exit(main(["bench", "verifier", *sys.argv[1:]]))
