"""`python -m clusterduck` is the `clusterduck` command."""

from .cli import main

main()
