"""``python -m mollia_edge``: the same command line as ``mollia-edge``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
