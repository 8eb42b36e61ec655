"""The `autorule` command: a thin layer over the Python API (parsing and printing only).

Modules: `app` (the top parser, dispatch, errors mapped to exit statuses), `options` (argument
types checked at parse time, the option groups commands share, the consoles), and one module
per command group, each with ``add_parsers(sub)`` and its ``cmd_*`` functions: `data`
(`data inspect`), `llm` (`llm generate|score`), `extract`, `score`, `validate`, `train`
(`train-rm`, `train`, `generate`), `report`, `bench` (the user-facing measurements), `serve`,
`rules` (`rules lint|show|diff|export|import`, `calibrate`), `quickstart`. Command modules
import `options`, never `app` or each other.
"""

from autorule.cli.app import main

__all__ = ["main"]
