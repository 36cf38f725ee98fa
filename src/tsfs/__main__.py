"""`python -m tsfs` runs the command-line interface."""

from tsfs.cli import main

main()
