"""Extraction throughput, concurrency C vs 1 and a warm-cache rerun; the same as `autorule bench extraction ...` (see BENCHMARKS.md)."""
import sys

from autorule.cli.app import main

sys.exit(main(["bench", "extraction", *sys.argv[1:]]))
