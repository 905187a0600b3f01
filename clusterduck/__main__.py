"""`python -m clusterduck` is the `clusterduck` command."""

from .entry import main

main()
