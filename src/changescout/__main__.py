"""``python -m changescout``: the command line, as the ``changescout`` script runs it (where no script is on PATH)."""

from .cli import entry

if __name__ == "__main__":
    entry()
