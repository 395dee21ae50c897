"""``python -m crispedit_lite``: see :mod:`crispedit_lite.cli`."""

from crispedit_lite.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
