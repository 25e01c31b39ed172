#!/usr/bin/env python3
"""Cold start, latency and peak memory of the functions' release binaries.

Plays the Lambda Runtime API on loopback (the same protocol the real service
speaks to a `provided.al2023` bootstrap) and runs each function binary as
Lambda would: init once, then invocations one at a time. Events are the
`events/*.json` samples, aimed at a conversation provisioned on the local
stack, so every invocation does its real work against Synapse and moto.

  init      spawn of the process until its first `GET /invocation/next`
  latency   `/next` answered until `/response` posted (handler + runtime)
  peak RSS  `VmHWM` of the process after the invocations

Usage: bench/lambda_bench.py <release-bin-dir> <colds> <invocations>
"""

import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stack_env():
    env = {}
    with open(os.path.join(ROOT, ".local", "stack.env")) as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep:
                env[key] = value
    return env


ENV = stack_env()


class RuntimeApi:
    """A minimal Lambda Runtime API: hands out queued events, collects replies."""

    def __init__(self):
        self.events = queue.Queue()
        self.replies = queue.Queue()
        self.first_poll = None
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/2018-06-01/runtime/invocation/next":
                    self.send_error(404)
                    return
                if api.first_poll is None:
                    api.first_poll = time.perf_counter()
                request_id, body = api.events.get()
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:bench")
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                api.sent_at = time.perf_counter()

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                self.send_response(202)
                self.end_headers()
                api.replies.put((self.path, time.perf_counter(), body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def run(binary, events, name):
    """Starts `binary`, feeds it `events`; returns init seconds, latencies, peak KiB."""
    api = RuntimeApi()
    env = dict(os.environ)
    env.update(ENV)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_LOG_LEVEL": "WARN",
    })
    started = time.perf_counter()
    process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latencies = []
    try:
        for event in events:
            api.events.put((str(uuid.uuid4()), event))
            path, done, body = api.replies.get(timeout=30)
            if not path.endswith("/response"):
                raise SystemExit(f"{name}: {path}: {body[:300]!r}")
            status = json.loads(body).get("statusCode")
            if status not in (200, 201):
                raise SystemExit(f"{name}: status {status}: {body[:300]!r}")
            latencies.append(done - api.sent_at)
        init = api.first_poll - started
        peak = peak_rss_kib(process.pid)
    finally:
        process.kill()
        process.wait()
        api.server.shutdown()
    return init, latencies, peak


def load_event(name):
    with open(os.path.join(ROOT, "events", f"{name}.json")) as f:
        return json.load(f)


def aimed(event, conversation, user, body=None):
    event = json.loads(json.dumps(event))
    path = event["rawPath"].replace("grp-42", conversation)
    event["rawPath"] = path
    event["requestContext"]["http"]["path"] = path
    event["pathParameters"]["id"] = conversation
    event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = user
    event["headers"].pop("idempotency-key", None)
    if body is not None:
        event["body"] = json.dumps(body)
    return event


def provision(conversation, user):
    token = subprocess.run([os.path.join(ROOT, "scripts", "dev-token"), "bench", "--admin"],
                           check=True, capture_output=True, text=True).stdout.strip()
    body = json.dumps({"id": conversation, "kind": "group",
                       "members": [{"user_id": user, "role": "owner", "display_name": "Bench"}]}).encode()
    request = urllib.request.Request(f"{ENV['BRIDGE_API_URL']}/v1/conversations", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 201, response.status


def main():
    bin_dir, colds, invocations = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    conversation, user = f"bench-{uuid.uuid4().hex[:8]}", "bencher"
    provision(conversation, user)
    workloads = {
        "send": [aimed(load_event("send-message-plain"), conversation, user, {"body": f"bench {n}"})
                 for n in range(invocations)],
        "history": [aimed(load_event("history-list-messages"), conversation, user)] * invocations,
        "provision": [aimed(load_event("provision-get-conversation"), conversation, user)] * invocations,
    }
    print("| function | binary size | init p50 (ms) | init max (ms) | first invocation (ms) | warm p50 (ms) | warm p99 (ms) | peak RSS (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, events in workloads.items():
        binary = os.path.join(bin_dir, name)
        inits, firsts, warm, peaks = [], [], [], []
        for _ in range(colds):
            init, latencies, peak = run(binary, events[:1], name)
            inits.append(init)
            firsts.append(latencies[0])
        init, latencies, peak = run(binary, events, name)
        warm = sorted(latencies[1:])
        peaks.append(peak)
        size = os.path.getsize(binary) / (1024 * 1024)
        p99 = warm[min(len(warm) - 1, int(len(warm) * 0.99))]
        print(f"| {name} | {size:.1f} MiB | {statistics.median(inits) * 1000:.1f} | {max(inits) * 1000:.1f} | "
              f"{statistics.median(firsts) * 1000:.1f} | {statistics.median(warm) * 1000:.1f} | {p99 * 1000:.1f} | "
              f"{max(peaks) / 1024:.1f} |")


if __name__ == "__main__":
    main()
