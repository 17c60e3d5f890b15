"""moto's server with DynamoDB made atomic: the one way this repository starts moto (tests, local stack, demo).

Why: moto's server answers requests on several threads and does not lock between evaluating a
ConditionExpression and writing the item, so two concurrent conditional writes can both succeed (measured: 16 of
200 rounds with two racing lease grants). Real DynamoDB never grants that, and our lease, fence and ledger
logic rely on it. This wrapper runs every DynamoDB request under one process-wide lock, body read to answer
written, so each request sees the effects of the ones before it as a whole. Every other service (S3 streaming
above all) stays concurrent.

Usage: python atomic_moto.py [-H HOST] [-p PORT]   (the interpreter of a venv with moto[server]==5.2.5)
Set ATOMIC_MOTO_DISABLE=1 to serve bare moto (only to watch the contract test fail, to show the race exists).
GET /_launcher/id answers ATOMIC_MOTO_ID: the harness checks it reached its own server, not another process's
that took the same free port first.
"""

import argparse
import os
import signal
import sys
import threading

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)

_DYNAMODB_LOCK = threading.Lock()


def _is_dynamodb(environ):
    # DynamoDB speaks the JSON protocol: the operation is named by X-Amz-Target ("DynamoDB_20120810.PutItem").
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    return target.startswith("DynamoDB_") or target.startswith("DynamoDBStreams_")


class Launcher:
    def __init__(self, app, atomic):
        self.app = app
        self.atomic = atomic
        self.launch_id = os.environ.get("ATOMIC_MOTO_ID", "").encode()

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == "/_launcher/id":
            headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(self.launch_id)))]
            start_response("200 OK", headers)
            return [self.launch_id]
        if not self.atomic or not _is_dynamodb(environ):
            return self.app(environ, start_response)
        with _DYNAMODB_LOCK:
            # Materialize the body under the lock: a lazy iterable could still be computing after release.
            return [b"".join(self.app(environ, start_response))]


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))

    atomic = os.environ.get("ATOMIC_MOTO_DISABLE") != "1"
    app = Launcher(DomainDispatcherApplication(create_backend_app), atomic)
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
