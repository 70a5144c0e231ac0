"""nodeq worker protocol for Python: run a node as a long-lived process.

nodeq's ``worker`` executor keeps a pool of these processes and sends them
one task at a time over stdin/stdout (docs/executors.md, "worker"). Write a
handler and call ``serve``::

    import nodeq_worker

    def handle(task):
        return task.payload.upper()

    if __name__ == "__main__":
        nodeq_worker.serve(handle)

The handler returns bytes or str (the task's output) or raises
``NodeError(kind, message)`` to fail the task with that error kind
(``"Transport"``, ``"Manifest"``, ...). Any other exception fails the task
with kind ``PythonVm``, its traceback on stderr. Print freely: stdout and
stderr both go to the consumer's log, attributed to the task. Only the
standard library is used.
"""

import base64
import json
import os
import sys
import traceback

__all__ = ["NodeError", "Task", "serve", "PROTOCOL"]

PROTOCOL = 1


class NodeError(Exception):
    """Fails the task with an error kind: Execution, PythonVm, Transport
    and Io are retried; Manifest, Marshaling, Serialization and Other are not."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


class Task:
    """One task: what the consumer sent, decoded."""

    __slots__ = ("id", "node_type", "node_id", "correlation_id", "params",
                 "payload", "payload_encoding", "attempt", "delivery", "deadline")

    def __init__(self, msg):
        self.id = msg["id"]
        self.node_type = msg.get("node_type", "")
        self.node_id = msg.get("node_id", "")
        self.correlation_id = msg.get("correlation_id", "")
        self.params = msg.get("params") or {}
        self.payload = base64.b64decode(msg.get("payload", ""))
        self.payload_encoding = msg.get("payload_encoding", "bytes")
        self.attempt = msg.get("attempt", 1)
        self.delivery = msg.get("delivery", 1)
        # RFC 3339 text, or None when the task has no deadline.
        self.deadline = msg.get("deadline")

    def json(self):
        """The payload parsed as JSON (a JSON envelope's payload value)."""
        return json.loads(self.payload)


def _protocol_streams():
    """Takes stdin and stdout for the protocol, and points file
    descriptors 0 and 1 elsewhere (/dev/null and stderr), so that prints and
    child processes cannot corrupt it."""
    proto_in = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto_in, proto_out


def _send(out, msg):
    out.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")


def _run(handler, msg):
    """Runs one task; returns the response message."""
    task_id = msg.get("id", "")
    try:
        task = Task(msg)
        result = handler(task)
        if result is None:
            result = b""
        elif isinstance(result, str):
            result = result.encode()
        elif not isinstance(result, (bytes, bytearray, memoryview)):
            raise NodeError("Serialization", "handler returned %s, want bytes or str" % type(result).__name__)
        return {"type": "result", "id": task_id, "output": base64.b64encode(bytes(result)).decode()}
    except NodeError as e:
        return {"type": "error", "id": task_id, "kind": str(e.kind), "message": str(e.message)}
    except Exception as e:  # the node's bug or its runtime's failure
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        return {"type": "error", "id": task_id, "kind": "PythonVm",
                "message": "%s: %s" % (type(e).__name__, e)}


def serve(handler):
    """Serves tasks until stdin ends (the consumer stopped or recycles this
    process). handler(task) returns bytes or str, or raises NodeError."""
    proto_in, proto_out = _protocol_streams()
    _send(proto_out, {"type": "ready", "protocol": PROTOCOL, "runtime": "python"})
    for line in proto_in:
        msg = json.loads(line)
        if msg.get("type") != "task":
            continue  # a newer consumer's message this version does not know
        response = _run(handler, msg)
        sys.stderr.flush()
        _send(proto_out, response)
