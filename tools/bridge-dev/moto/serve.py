"""moto's server for the local stack, one request at a time.

moto's own `moto_server` answers requests on threads, and its DynamoDB
TransactWriteItems deep-copies a whole table while other threads write to it
("RuntimeError: dictionary changed size during iteration", answered as an
HTML 500 the AWS SDK cannot read). Served on one thread, every request sees
the table whole, as DynamoDB's own serialised writes would. The local stack's
load is small, so one thread is enough.

Usage: python serve.py HOST PORT (run by `bridge-dev stack up`).
"""

import sys

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, app, threaded=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
