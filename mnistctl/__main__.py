"""`python -m mnistctl`: the same CLI as the `mnistctl` console script (used by the local stack's subprocesses)."""

from mnistctl.cli import app

app()
