"""The run's human-facing outputs: quicklooks (PNG), plots and the HTML report."""

from .html import write_report
from .quicklooks import write_quicklooks

__all__ = ["write_quicklooks", "write_report"]
