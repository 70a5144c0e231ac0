"""An example node: upper-cases its payload, with params and error kinds.

params:
  fail: "transport" fails the task with kind Transport (retried),
        "manifest" with kind Manifest (dead-lettered at once),
        "raise" raises a plain exception (kind PythonVm, retried).
  suffix: text appended to the output.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import nodeq_worker  # noqa: E402
from nodeq_worker import NodeError  # noqa: E402


def handle(task):
    fail = task.params.get("fail")
    if fail == "transport":
        raise NodeError("Transport", "upstream refused")
    if fail == "manifest":
        raise NodeError("Manifest", "param fail=manifest")
    if fail == "raise":
        raise ValueError("bad value")
    print("upper-casing %d bytes (attempt %d)" % (len(task.payload), task.attempt))
    return task.payload.upper() + task.params.get("suffix", "").encode()


if __name__ == "__main__":
    nodeq_worker.serve(handle)
