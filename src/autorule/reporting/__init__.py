"""`autorule report RUN_DIR`: one self-contained HTML file (charts inlined, no network)."""

from autorule.reporting.build import build_report

__all__ = ["build_report"]
