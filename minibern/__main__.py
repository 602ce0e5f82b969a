"""``python -m minibern ...``: the command line lives in :mod:`minibern.cli`."""
import sys

from minibern.cli.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
