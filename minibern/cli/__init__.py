"""The command line: ``python -m minibern {train,demo,plot,fetch-mnist}`` (:mod:`minibern.cli.__main__`)."""
