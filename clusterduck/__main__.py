"""`python -m clusterduck` is the `clusterduck` command."""

from .cli.app import main

main(prog_name="clusterduck")
