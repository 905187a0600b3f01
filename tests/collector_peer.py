"""A test collector in a process of its own (tests/test_collector.py), so that a test can
stop it (SIGSTOP) and let a sink's frames back up in the sink, as a test process does
on a loaded machine when its reader falls behind.

Binds the same PULL socket ``clusterduck.testing.run_processes`` binds (ipc in a private
directory), prints its endpoint on one line, then counts every sink's messages until
each of ``--senders`` sent its end of stream or nothing arrived for ``--idle`` seconds,
and prints the counts as JSON: ``{"messages": {sender: n}, "ended": [sender, …]}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from clusterduck.protocol import parse_header
from clusterduck.runtime.codec import get_codec
from clusterduck.runtime.transport import Transport, private_dir


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topology", required=True)
    parser.add_argument("--senders", type=int, required=True)
    parser.add_argument("--idle", type=float, default=10.0)
    args = parser.parse_args()
    folder = private_dir(args.topology)
    transport = Transport(None, ipc_dir=folder)
    inbox = transport.pull("127.0.0.1", "127.0.0.1", name="collector")
    print(inbox.endpoint, flush=True)
    codec = get_codec("pickle")
    messages: dict[str, int] = {}
    ended: set[str] = set()
    while len(ended) < args.senders and inbox.raw.poll(int(args.idle * 1000)):
        frames = inbox.recv()
        assert frames is not None
        header = parse_header(frames[0])
        if header is None:
            continue
        if header.eos:
            ended.add(header.sender)
        elif len(frames) > 1:
            count = len(codec.loads_columns(frames[1])[1])
            messages[header.sender] = messages.get(header.sender, 0) + count
    print(json.dumps({"messages": messages, "ended": sorted(ended)}), flush=True)
    transport.close(linger_ms=0)
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
