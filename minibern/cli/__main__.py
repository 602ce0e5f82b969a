"""Command line: ``python -m minibern {train,demo,plot,fetch-mnist} ...`` (``--help`` on each)."""
from __future__ import annotations

import os
import sys

COMMANDS = {
    "train": ("minibern.cli.train", "main", "train a model on MNIST, write a run directory"),
    "demo": ("minibern.cli.demo", "main", "train a small dense net on synthetic data"),
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
    try:  # each command names its own errors; this is the net under them: never a traceback
        return getattr(module, function)(argv[1:])
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"error: out of memory in `{argv[0]}`; try smaller settings", file=sys.stderr)
        return 1
    except (OSError, RuntimeError) as error:  # the file system, a device, a missing backend
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        if os.environ.get("MINIBERN_DEBUG"):
            raise
        print(f"error: unexpected {type(error).__name__}: {error}; this is a bug in minibern — "
              "please report it (MINIBERN_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
