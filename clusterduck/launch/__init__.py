"""Reaching hosts: one interface (``base.HostConnection``), a local and an SSH implementation."""
