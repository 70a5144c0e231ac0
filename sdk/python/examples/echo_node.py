"""An echo node: its output is its payload."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import nodeq_worker  # noqa: E402


def handle(task):
    return task.payload


if __name__ == "__main__":
    nodeq_worker.serve(handle)
