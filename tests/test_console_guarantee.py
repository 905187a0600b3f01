"""The status table names the guarantee and shows pending and replayed under
at-least-once, and stays as it was under at-most-once."""

from __future__ import annotations

from rich.console import Console

from clusterduck.cli.console import status_table
from clusterduck.protocol import ComponentStatus, InstanceStatus, State, TopologyStatus


def rendered(guarantee: str) -> str:
    row = InstanceStatus("ids", 0, "localhost", State.RUNNING, pending=1234, replayed=567)
    status = TopologyStatus(
        "t",
        State.RUNNING,
        components=(ComponentStatus("ids", "spout", (row,)),),
        guarantee=guarantee,
    )
    console = Console(width=300, record=True)
    console.print(status_table(status))
    return console.export_text()


def test_at_least_once_shows_pending_and_replayed() -> None:
    text = rendered("at-least-once")
    assert "at-least-once" in text.splitlines()[0]
    assert "pending" in text and "replayed" in text and "1,234" in text and "567" in text


def test_at_most_once_table_is_unchanged() -> None:
    text = rendered("at-most-once")
    assert "pending" not in text and "replayed" not in text and "once" not in text
