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

Every figure is also given as a ratio to a `lambda_runtime` hello-world
(`bench/hello`, the same release profile) measured in the same run, so that
runs on a loaded machine can still be compared.

Usage: bench/lambda_bench.py <release-bin-dir> <colds> <invocations>
       bench/lambda_bench.py --binaries   (what it runs: the binaries to build)
       bench/lambda_bench.py --cold-path <release-bin-dir> <containers> [--cpu MB] [KEY=VALUE ...]
Prints a Markdown table on stdout.

`--cold-path` (scripts/bench-tls) measures what a new container meets:
init, then the first invocation, then the second, of `containers`
containers each, with KEY=VALUE set over the stack's settings (the TLS
endpoints and the test CA). `--cpu MB` gives the invocations the CPU share
Lambda gives a function of MB megabytes (1,769 MB = one vCPU) with a
cgroup-v1 CPU quota (root only); init runs unthrottled, as in Lambda.
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
    path = os.path.join(ROOT, ".local", "stack.env")
    if not os.path.exists(path):  # not up yet: only --binaries works
        return env
    with open(path) as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep:
                env[key] = value
    return env


ENV = stack_env()

# The system's trust store as one bundle file: what a function on Lambda's
# Amazon Linux 2023 reads (its /etc/ssl/certs holds the bundle, not a file
# per certificate). This Debian machine also has a file per certificate in
# /etc/ssl/certs, which rustls-native-certs reads one by one besides the
# bundle unless SSL_CERT_FILE names one: 4 ms more of every function's init
# (bench/RESULTS.md, "Where init goes"). BRIDGE_BENCH_TRUST=system measures that.
TRUST_BUNDLE = None if os.environ.get("BRIDGE_BENCH_TRUST") == "system" else next(
    (path for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
     if os.path.exists(path)), None)
CGROUP = "/sys/fs/cgroup/cpu/bridge-bench"


def throttle(megabytes):
    """A cgroup whose processes get Lambda's CPU share for `megabytes`; its `cgroup.procs`."""
    os.makedirs(CGROUP, exist_ok=True)
    with open(os.path.join(CGROUP, "cpu.cfs_period_us"), "w") as f:
        f.write("100000")
    with open(os.path.join(CGROUP, "cpu.cfs_quota_us"), "w") as f:
        f.write(str(int(100000 * megabytes / 1769)))
    return os.path.join(CGROUP, "cgroup.procs")


class RuntimeApi:
    """A minimal Lambda Runtime API: hands out queued events, collects replies."""

    def __init__(self):
        self.events = queue.Queue()
        self.replies = queue.Queue()
        self.first_poll = None
        self.pid = None
        self.throttle = None
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
                    if api.throttle:
                        # Init is over: from here on, the function's CPU share.
                        with open(api.throttle, "w") as f:
                            f.write(str(api.pid))
                request_id, body = api.events.get()
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:bench")
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                # Before the body goes: a fast function answers before
                # this thread runs again.
                api.sent_at = time.perf_counter()
                self.wfile.write(payload)

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


def run(binary, events, name, overrides=None, cgroup=None):
    """Starts `binary`, feeds it `events`; returns init seconds, latencies, peak KiB."""
    api = RuntimeApi()
    api.throttle = cgroup
    # Lambda's environment holds the function's settings and its own, not
    # this machine's (an SSL_CERT_DIR here made every TLS client read a
    # directory of 150 certificates). The trust store is read as on Lambda's
    # Amazon Linux 2023, from one bundle (TRUST_BUNDLE).
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if TRUST_BUNDLE:
        env["SSL_CERT_FILE"] = TRUST_BUNDLE
    env.update(ENV)
    env.update(overrides or {})
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
    api.pid = process.pid
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
        return json.loads(response.read())["room_id"]


def transaction(room, n):
    """A one-message appservice transaction from a plain Matrix user, as the front door hands it over."""
    txn = f"bench-{uuid.uuid4().hex}-{n}"
    path = f"/_matrix/app/v1/transactions/{txn}"
    body = {"events": [{"type": "m.room.message", "event_id": f"${txn}", "room_id": room,
                        "sender": f"@bench-user:{ENV['MATRIX_SERVER_NAME']}",
                        "origin_server_ts": int(time.time() * 1000), "unsigned": {"age": 1},
                        "content": {"msgtype": "m.text", "body": f"bench {n}"}}], "ephemeral": []}
    return {
        "version": "2.0", "routeKey": "PUT /_matrix/app/v1/transactions/{txnId}", "rawPath": path,
        "rawQueryString": "", "pathParameters": {"txnId": txn}, "isBase64Encoded": False,
        "headers": {"authorization": f"Bearer {ENV['MATRIX_HS_TOKEN']}", "content-type": "application/json"},
        "requestContext": {"accountId": "000000000000", "apiId": "bench", "domainName": "localhost",
                           "domainPrefix": "localhost", "requestId": str(uuid.uuid4()),
                           "routeKey": "PUT /_matrix/app/v1/transactions/{txnId}", "stage": "$default",
                           "time": "", "timeEpoch": 0,
                           "http": {"method": "PUT", "path": path, "protocol": "HTTP/1.1",
                                    "sourceIp": "127.0.0.1", "userAgent": "bench"}},
        "body": json.dumps(body),
    }


def percentile(values, p):
    """Nearest-rank percentile (p99 of 10 values is their maximum)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def measure(binary, events, name, colds):
    """`colds` cold starts (init and first invocation), then one container for all `events`."""
    inits, firsts = [], []
    for _ in range(colds):
        init, latencies, _ = run(binary, events[:1], name)
        inits.append(init)
        firsts.append(latencies[0])
    _, latencies, peak = run(binary, events, name)
    return {"inits": inits, "firsts": firsts, "warm": latencies[1:], "peak": peak,
            "size": os.path.getsize(binary)}


# The functions with a workload here (what scripts/bench builds), and the yardstick.
FUNCTIONS = ["send", "history", "provision", "transactions"]
HELLO = "bench-hello"


def workloads(calls):
    """Per binary, `calls` events aimed at a conversation provisioned for the run."""
    conversation, user = f"bench-{uuid.uuid4().hex[:8]}", "bencher"
    room = provision(conversation, user)
    return {
        HELLO: [{"hello": n} for n in range(calls)],
        "send": [aimed(load_event("send-message-plain"), conversation, user, {"body": f"bench {n}"})
                 for n in range(calls)],
        "history": [aimed(load_event("history-list-messages"), conversation, user)] * calls,
        "provision": [aimed(load_event("provision-get-conversation"), conversation, user)] * calls,
        "transactions": [transaction(room, n) for n in range(calls)],
    }


def ms(seconds):
    return f"{seconds * 1000:.1f}"


def cold_path(bin_dir, containers, args):
    """Init, first and second invocation (and the median of three more) of new containers."""
    cpu, overrides = None, {}
    while args:
        arg = args.pop(0)
        if arg == "--cpu":
            cpu = int(args.pop(0))
        else:
            key, _, value = arg.partition("=")
            overrides[key] = value
    cgroup = throttle(cpu) if cpu else None
    results = {}
    for name, events in workloads(5).items():
        inits, firsts, seconds, warms = [], [], [], []
        for n in range(containers):
            if name == "send":
                events = [dict(e, body=json.dumps({"body": f"cold {n}.{i}"})) for i, e in enumerate(events)]
            if name == "transactions":
                events = [transaction(json.loads(events[0]["body"])["events"][0]["room_id"], i) for i in range(5)]
            init, latencies, _ = run(os.path.join(bin_dir, name), events, name, overrides, cgroup)
            inits.append(init)
            firsts.append(latencies[0])
            seconds.append(latencies[1])
            warms.append(statistics.median(latencies[2:]))
        results[name] = [statistics.median(v) for v in (inits, firsts, seconds, warms)]
    hello_init = results[HELLO][0]
    print("| function | init (ms) | init × hello | first call (ms) | second call (ms) | warm call (ms) "
          "| first ÷ warm |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, (init, first, second, warm) in results.items():
        label = "hello-world (`bench/hello`)" if name == HELLO else name
        print(f"| {label} | {ms(init)} | {init / hello_init:.1f} | {ms(first)} | {ms(second)} | {ms(warm)} "
              f"| {first / warm:.1f} |")
    print()
    share = f"the CPU share of a {cpu} MB function (cgroup quota) after init" if cpu else "unthrottled CPU"
    print(f"Medians of {containers} containers each; warm call = median of invocations 3-5; {share}.")


def main():
    if sys.argv[1] == "--binaries":
        print("\n".join([HELLO] + FUNCTIONS))
        return
    if sys.argv[1] == "--cold-path":
        cold_path(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
        return
    bin_dir, colds, invocations = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    calls = invocations + 1  # the first call of the warm container is not a warm one
    results = {name: measure(os.path.join(bin_dir, name), events, name, colds)
               for name, events in workloads(calls).items()}
    hello = results[HELLO]
    hello_init = statistics.median(hello["inits"])
    hello_warm = statistics.median(hello["warm"])

    print(f"| function | binary | init p50 (ms) | init p99 (ms) | init p50 × hello | first call p50 (ms) "
          f"| first ÷ warm | warm p50 (ms) | warm p99 (ms) | warm p50 × hello | peak RSS (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        init, first, warm = statistics.median(r["inits"]), statistics.median(r["firsts"]), statistics.median(r["warm"])
        label = "hello-world (`bench/hello`)" if name == HELLO else name
        print(f"| {label} | {r['size'] / 1048576:.1f} MiB | {ms(init)} | {ms(percentile(r['inits'], 99))} | "
              f"{init / hello_init:.1f} | {ms(first)} | {first / warm:.1f} | {ms(warm)} | "
              f"{ms(percentile(r['warm'], 99))} | {warm / hello_warm:.0f} | {r['peak'] / 1024:.1f} |")
    print()
    print(f"{colds} cold starts and {invocations} warm calls per function; p99 of {colds} cold starts is their "
          f"maximum. Hello-world in this run: init {ms(hello_init)} ms, warm call {hello_warm * 1e6:.0f} µs.")


if __name__ == "__main__":
    main()
