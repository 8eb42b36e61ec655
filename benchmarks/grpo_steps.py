"""GRPO step breakdown: generation, reward (rules, RM), update; with and without the verdict cache; the same as `autorule bench grpo ...` (see BENCHMARKS.md)."""
import sys

from autorule.cli.app import main

sys.exit(main(["bench", "grpo", *sys.argv[1:]]))
