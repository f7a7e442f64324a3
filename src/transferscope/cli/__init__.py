"""The ``transferscope`` command: :mod:`.app` holds the Typer application and the commands that
run studies (run, estimate, analyze, report); :mod:`.inspect` the commands that only look
(config, data, status); :mod:`.progress` the terminal display; :mod:`.train_run` the torchrun
entry point of one run. Importing the package registers every command on :data:`app`."""

from transferscope.cli import inspect as inspect  # registers config, data and status
from transferscope.cli.app import app, main

__all__ = ["app", "main"]
