"""What every tutorial shares: its four options and where its figures go.

Kept beside the tutorials, not in the package: it is glue for these scripts (each imports it as
``_common``, which Python finds because a script's own folder is on ``sys.path``), and the
package's API stays free of script concerns. Tutorial 10 does not use it: it must run with
NumPy alone.

``tutorial_args(__doc__, quick=..., out=...)`` parses ``--backend --seed --quick --out`` (plus any
options a tutorial adds through ``extra``), selects the array backend, creates ``--out`` and
returns the namespace. Run inside a notebook (the ``# %%`` cells opened in Jupyter or an editor),
the kernel's own command line is ignored and the defaults are used.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import minibern
from minibern.plots import pyplot, save_figure as save  # noqa: F401 (re-exported)


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def tutorial_args(doc: str, *, quick: str, out: str, extra=None, argv=None):
    """Parse the tutorial's options; ``quick`` says what ``--quick`` shortens, ``out`` is the
    default output folder, ``extra(parser)`` may add options. Returns the argparse namespace
    with ``out`` as a created :class:`~pathlib.Path`."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("numpy", "cupy", "strict"), default=None,
                        help="array backend (default: $MINIBERN_BACKEND, else numpy)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random stream")
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--out", default=out, help=f"folder for figures and files (default {out})")
    if extra is not None:
        extra(parser)
    args = parser.parse_args([] if argv is None and _in_notebook() else argv)
    if args.backend:
        minibern.set_backend(args.backend)
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    return args

