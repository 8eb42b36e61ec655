"""Prompt-injection attacks and how often they flip the verifier; the same as `autorule bench injection ...` (see BENCHMARKS.md)."""
import sys

from autorule.cli.app import main

sys.exit(main(["bench", "injection", *sys.argv[1:]]))
