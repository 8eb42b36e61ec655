"""The `autorule` command: a thin layer over the Python API.

Modules: `app` (the parser and the pipeline commands), `rules` (`autorule rules ...`),
`bench` (`autorule bench ...`: the user-facing measurements), `options` (argument types
checked at parse time).
"""

from autorule.cli.app import main

__all__ = ["main"]
