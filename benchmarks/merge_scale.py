"""The merge stage's clustering at growing candidate pools; the same as `autorule bench merge-scale ...` (see BENCHMARKS.md)."""
import sys

from autorule.cli.app import main

sys.exit(main(["bench", "merge-scale", *sys.argv[1:]]))
