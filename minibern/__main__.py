"""Command line: ``python -m minibern {train,demo,plot,fetch-mnist} ...`` (``--help`` on each)."""
from __future__ import annotations

import sys

COMMANDS = {
    "train": ("minibern.cli_train", "main", "train a model on MNIST, write a run directory"),
    "demo": ("minibern.demo", "main", "train a small dense net on synthetic data"),
    "plot": ("minibern.plots", "main", "draw every figure that applies to a run directory"),
    "fetch-mnist": ("minibern.data.fetch", "main_fetch", "download and verify the MNIST files"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<12} {help_}" for name, (_, _, help_) in COMMANDS.items()]
        usage = "usage: python -m minibern COMMAND [options]\n\ncommands:\n" + "\n".join(lines)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"{usage}\n\nerror: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        print(usage)
        return 0 if argv else 2
    module_name, function, _ = COMMANDS[argv[0]]
    module = __import__(module_name, fromlist=[function])
    return getattr(module, function)(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
