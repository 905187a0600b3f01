"""`python -m clusterduck.cli` is the `clusterduck` command."""

from .app import main

main(prog_name="clusterduck")
