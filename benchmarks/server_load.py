"""The reward server under load: latency percentiles, every reward checked; the same as `autorule bench server ...` (see BENCHMARKS.md)."""
import sys

from autorule.cli.app import main

sys.exit(main(["bench", "server", *sys.argv[1:]]))
