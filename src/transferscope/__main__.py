"""``python -m transferscope`` is the ``transferscope`` command."""

from transferscope.cli import app

# Guarded: the parallel local executor starts worker processes that import this module again.
if __name__ == "__main__":
    app(prog_name="transferscope")
