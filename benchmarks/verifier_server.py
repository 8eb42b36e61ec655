"""Verifier throughput against an OpenAI-compatible server, both modes; the same as `autorule bench verifier-server ...` (see BENCHMARKS.md)."""
import sys

from autorule.cli.app import main

sys.exit(main(["bench", "verifier-server", *sys.argv[1:]]))
