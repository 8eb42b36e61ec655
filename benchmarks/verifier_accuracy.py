"""A verifier's accuracy, AUC and calibration on rules whose truth a program decides; the same as `autorule bench verifier-accuracy ...` (see BENCHMARKS.md)."""
import sys

from autorule.cli.app import main

sys.exit(main(["bench", "verifier-accuracy", *sys.argv[1:]]))
