"""Drain: an unpaced spout into a 5 ms worker for a while, then a graceful ``down``.

    python benchmarks/drain.py [--seconds 60]

Runs ``benchmarks/drain.yaml`` with the real CLI (``clusterduck up``, ``status --json``,
``down``) under a private ``$CLUSTERDUCK_HOME``. Reports how long ``down`` took (the CLI's whole
command, and the drain itself: the spout's stop to the sink's ``close``), the
messages in flight just before it (dispatched by the spout, not yet at the sink), and
whether anything whose ``dispatch`` returned was lost: the sink must hold exactly
0..k-1 with k at least the number of ``dispatch`` calls that returned.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=120.0, help="down --timeout")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="clusterduck-drain-") as tmp:
        name = f"bench-drain-{uuid.uuid4().hex[:6]}"
        env = {
            **os.environ,
            "CLUSTERDUCK_HOME": str(Path(tmp, "home")),
            "STAMPS": tmp,
            "DRAIN_NAME": name,
        }
        cli = [sys.executable, "-m", "clusterduck"]

        def run(*cmd: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*cli, *cmd], env=env, capture_output=True, text=True, timeout=args.timeout + 60
            )

        up = run("up", str(HERE / "drain.yaml"))
        if up.returncode:
            raise SystemExit(up.stderr)
        time.sleep(args.seconds)
        status = json.loads(run("status", name, "--json").stdout)
        rows = {(c["name"], r["index"]): r for c in status["components"] for r in c["instances"]}
        in_flight = rows[("counted", 0)]["emitted"] - rows[("sink", 0)]["received"]
        began = time.monotonic()
        down = run("down", name, "--timeout", str(args.timeout))
        took = time.monotonic() - began
        ids = array.array("q")
        ids_file = Path(tmp, "ids")
        if ids_file.exists():
            ids.frombytes(ids_file.read_bytes())
        dispatched = int(Path(tmp, "dispatched").read_text())
        exact = list(ids) == list(range(len(ids)))
        drained = None
        if Path(tmp, "closed").exists():
            drained = float(Path(tmp, "closed").read_text()) - float(
                Path(tmp, "stopped").read_text()
            )
        lost = max(0, dispatched - len(ids))
    print(f"{args.seconds:g}s unpaced spout -> 5 ms worker -> sink, then graceful down")
    print(f"  down took                  {took:>10.2f} s   (exit {down.returncode})")
    if drained is not None:
        print(f"  of which draining          {drained:>10.2f} s   (spout stopped -> sink closed)")
    else:
        print("  the sink never closed: it was killed at the timeout")
    print(f"  in flight before down      {in_flight:>10,}   (spout emitted - sink received)")
    print(f"  dispatch calls returned    {dispatched:>10,}")
    print(f"  sink received              {len(ids):>10,}   (exactly 0..k-1: {exact})")
    print(f"  lost                       {lost:>10,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
