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


def describe_failure(error: BaseException, command: str) -> tuple[str, int]:
    """The one message and exit status for an exception that reached the top of ``command``
    (a CLI command or a tutorial script): a ValueError is minibern's way of naming a bad value
    and its fix, so its message is shown as is; anything else unexpected is called a bug."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(error, MemoryError):
        return f"out of memory in `{command}`{': ' + str(error) if error.args else ''}; try " \
               "smaller settings", 1
    if isinstance(error, ValueError):  # a bad value, named with its fix
        return str(error), 1
    if isinstance(error, (OSError, RuntimeError)):  # the file system, a device, a backend
        return f"{type(error).__name__}: {error}", 1
    return (f"unexpected {type(error).__name__}: {error}; this is a bug in minibern — please "
            "report it (MINIBERN_DEBUG=1 shows the traceback)", 1)


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
    except Exception as error:
        if os.environ.get("MINIBERN_DEBUG"):
            raise
        message, status = describe_failure(error, argv[0])
    except KeyboardInterrupt as error:
        message, status = describe_failure(error, argv[0])
    print(f"error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
