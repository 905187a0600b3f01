"""Components of the start-up benchmarks (startup.py, hosts.py): a slow endless spout,
identity workers and a sink, so that what is measured is starting, not working."""

import itertools
import time


def numbers(dispatch):
    for i in itertools.count():
        dispatch(i, i)
        time.sleep(0.01)


def same(x):
    return x


def sink(x):
    return None
