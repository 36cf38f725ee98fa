"""`python -m tsfs` runs the command-line interface."""

from tsfs.cli.main import app

app(prog_name="tsfs")
