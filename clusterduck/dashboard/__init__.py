"""``clusterduck dashboard``: a read-only web page of running topologies, and
Prometheus ``/metrics``.

Layout: ``status_source`` (the only reader of the deploy engine and the state folder),
``watch`` and ``history`` (one poller per topology, rate history), ``metrics``
(prometheus-client), ``app`` (Starlette routes), ``server`` (uvicorn), ``static/`` (the
page: hand-written HTML, CSS and JavaScript, no CDN). Needs the ``dashboard`` extra.
"""

from __future__ import annotations

__all__ = ["EXTRA_HINT", "missing_dependency"]

EXTRA_HINT = "pip install 'clusterduck[dashboard]'"


def missing_dependency() -> str | None:
    """The name of a missing web dependency, or None when the dashboard can run."""
    import importlib

    for module in ("starlette", "uvicorn", "prometheus_client"):
        try:
            importlib.import_module(module)
        except ImportError:
            return module
    return None
