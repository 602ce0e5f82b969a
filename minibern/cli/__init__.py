"""The command line: ``python -m minibern {train,demo,fetch-mnist}`` (:mod:`minibern.cli.__main__`)."""
