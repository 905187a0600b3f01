"""The processes that run on hosts, and the CLI's --help, import only what they need.

Each check runs in a fresh interpreter, since this one has long imported everything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("pydantic", "yaml", "click", "rich", "paramiko")


def loaded_after(code: str) -> set[str]:
    """Top-level modules present in sys.modules after running ``code`` in a fresh process."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {name.split(".")[0] for name in json.loads(out.strip().splitlines()[-1])}


@pytest.mark.parametrize(
    "module", ["clusterduck.runtime.process", "clusterduck.runtime.supervisor"]
)
def test_runtime_entry_points_do_not_import_heavy_libraries(module: str) -> None:
    loaded = loaded_after(f"import {module}")
    assert "zmq" in loaded  # the probe sees the runtime's own imports
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


# Standard modules a host's processes need only on a rare path (a spawn fallback, a kill
# that times out, an ipc path too long, a did-you-mean hint): imported there, since every
# supervisor start and the fork server of every host would pay for them (issue 12).
RARE = ("subprocess", "hashlib", "secrets", "difflib", "asyncio")


def test_runtime_entry_points_leave_rarely_needed_modules_for_later() -> None:
    before = loaded_after("pass")  # what this interpreter's site already loads
    loaded = loaded_after("import clusterduck.runtime.supervisor, clusterduck.runtime.process")
    assert "zmq" in loaded
    added = (loaded - before) & set(RARE)
    assert not added, sorted(added)


def test_a_curve_server_socket_does_not_import_asyncio() -> None:
    """Every CURVE server socket (a supervisor's control socket, a worker's inbox) starts
    the ZAP handler: ours answers from a plain thread, pyzmq's needs asyncio (~30 ms)."""
    code = (
        "from clusterduck.runtime.transport import Transport, generate_curve_keys\n"
        "tr = Transport(generate_curve_keys(['w/0']))\n"
        "sock = tr.router('127.0.0.1', '127.0.0.1')\n"
        "assert tr._auth is not None\n"
        "tr.close(linger_ms=0)"
    )
    loaded = loaded_after(code)
    assert "zmq" in loaded
    assert "asyncio" not in loaded


def test_cli_help_does_not_import_pydantic_paramiko_or_zmq() -> None:
    code = (
        "import sys\nfrom clusterduck.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    loaded = loaded_after(code)
    assert "click" in loaded
    assert loaded.isdisjoint({"pydantic", "paramiko", "zmq", "rich", "yaml"}), sorted(
        loaded & {"pydantic", "paramiko", "zmq", "rich", "yaml"}
    )


def test_python_m_clusterduck_cli_help_works() -> None:
    """The package has no import cycle: `python -m clusterduck.cli` runs."""
    result = subprocess.run(
        [sys.executable, "-m", "clusterduck.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for command in ("validate", "schema", "graph", "up", "status", "down", "logs", "list"):
        assert command in result.stdout


def test_graph_formats_agree_with_the_cli_choices() -> None:
    from clusterduck.cli.inspect import GRAPH_FORMATS
    from clusterduck.graph import FORMATS

    assert GRAPH_FORMATS == FORMATS


def test_report_formats_agree_with_the_cli_choices() -> None:
    from clusterduck.cli.inspect import REPORT_FORMATS
    from clusterduck.reports import FORMATS

    assert REPORT_FORMATS == FORMATS


def test_the_public_models_are_still_reachable_from_the_package() -> None:
    import clusterduck
    from clusterduck.topology import Topology

    assert clusterduck.Topology is Topology
    with pytest.raises(AttributeError):
        clusterduck.NoSuchThing  # noqa: B018


def test_ssh_launcher_imports_paramiko_without_invoke() -> None:
    """paramiko imports ``invoke`` (when installed) for ``Match exec`` lines only."""
    pytest.importorskip("invoke")
    assert "invoke" not in loaded_after("import clusterduck.launch.ssh")


def test_match_exec_in_ssh_config_still_runs_its_command(tmp_path: Path) -> None:
    pytest.importorskip("invoke")
    marker = tmp_path / "ran"
    code = (
        "import clusterduck.launch.ssh\nimport paramiko\n"
        f"text = 'Match exec \"touch {marker}\"\\n  User matched\\n'\n"
        "print(paramiko.SSHConfig.from_text(text).lookup('h1'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "matched" in result.stdout
    assert marker.exists()


def test_a_pickle_topology_never_imports_msgpack() -> None:
    """msgpack is imported by the msgpack serializer only (about 4 ms of every process
    start under pickle or json)."""
    code = (
        "import clusterduck.runtime.supervisor, clusterduck.runtime.process\n"
        "from clusterduck.runtime.codec import get_codec\n"
        "codec = get_codec('pickle')\n"
        "assert codec.loads(codec.dumps([(0, ('x', 1))])) == [(0, ('x', 1))]"
    )
    assert "msgpack" not in loaded_after("pass")  # this interpreter's site does not
    assert "msgpack" not in loaded_after(code)
    lists = code.replace("('x', 1)", "['x', 1]")  # tuples come back as lists
    assert "msgpack" not in loaded_after(lists.replace("'pickle'", "'json'"))
    assert "msgpack" in loaded_after(lists.replace("'pickle'", "'msgpack'"))
