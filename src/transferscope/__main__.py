"""``python -m transferscope`` is the ``transferscope`` command."""

from transferscope.cli import app

app(prog_name="transferscope")
