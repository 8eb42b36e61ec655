"""The plan's time against the measured time; the same as `autorule bench plan ...` (see BENCHMARKS.md)."""
import sys

from autorule.cli.app import main

sys.exit(main(["bench", "plan", *sys.argv[1:]]))
