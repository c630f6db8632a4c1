"""`python -m mnistctl`: the `mnistctl` console script (the local stack starts its subprocesses this way)."""

from mnistctl.cli import app

app()
