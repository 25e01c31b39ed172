#!/usr/bin/env python3
"""The drain after an outage (scripts/bench-drain): how long the bridge takes
to deliver what it accepted while the homeserver was down, against the
floor, the time the same homeserver takes to accept as many sends from one
appservice client with no bridge in between.

1. `conversations` conversations are provisioned through the front door,
   each with one application user (a puppet).
2. The floor: `messages` sends straight to Synapse with the `as_token`,
   masquerading as the puppets, one stream per room (in order within it),
   all rooms at once.
3. Synapse is killed; `messages` more are sent through the API, spread over
   the conversations (each answered 202: queued).
4. Synapse is started again (`scripts/stack up`). From the moment it
   answers, the history API is polled until every message is `sent`; then
   each room is read from Synapse and the bodies compared with the order
   the API accepted them in.

Usage: bench/drain_bench.py <messages> <conversations>
Prints Markdown on stdout.
"""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from lambda_bench import ENV  # noqa: E402  (the stack's settings)


def request(method, url, token, body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return response.status, json.loads(response.read() or b"null")


def token(user, admin=False):
    args = [os.path.join(ROOT, "scripts", "dev-token"), user] + (["--admin"] if admin else [])
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def in_parallel(jobs):
    """Runs every callable of `jobs` on its own thread; re-raises the first failure."""
    errors = []

    def guard(job):
        try:
            job()
        except Exception as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    threads = [threading.Thread(target=guard, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def cpu_seconds(part):
    """CPU time (user + system) a part of the stack has used so far, by
    its pid file; None when it is not running."""
    try:
        with open(os.path.join(ROOT, ".local", "run", f"{part}.pid")) as f:
            pid = f.read().strip()
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


PARTS = ("moto", "synapse", "retry", "gateway")


def synapse_answers():
    try:
        urllib.request.urlopen(f"{ENV['MATRIX_HOMESERVER_URL']}/_matrix/client/versions", timeout=2)
        return True
    except OSError:
        return False


def main():
    messages, count = int(sys.argv[1]), int(sys.argv[2])
    api, hs = ENV["BRIDGE_API_URL"], ENV["MATRIX_HOMESERVER_URL"]
    admin = token("bench", admin=True)
    tag = uuid.uuid4().hex[:6]
    conversations = []
    for n in range(count):
        conversation, user = f"drain-{tag}-{n}", f"drainer{tag}{n}"
        status, view = request("POST", f"{api}/v1/conversations", admin, {
            "id": conversation, "kind": "group",
            "members": [{"user_id": user, "role": "owner", "display_name": f"Drainer {n}"}]})
        assert status == 201, (status, view)
        puppet = next(m["matrix_user_id"] for m in view["members"] if m.get("user_id") == user)
        conversations.append({"id": conversation, "user": user, "room": view["room_id"],
                              "puppet": puppet, "token": token(user), "bodies": []})
    per = [messages // count + (1 if n < messages % count else 0) for n in range(count)]

    # The floor: one appservice client straight to Synapse, one stream per room.
    def direct(c, n):
        def run():
            for i in range(n):
                url = (f"{hs}/_matrix/client/v3/rooms/{urllib.parse.quote(c['room'])}/send/m.room.message/"
                       f"floor-{tag}-{i}?user_id={urllib.parse.quote(c['puppet'])}")
                status, _ = request("PUT", url, ENV["MATRIX_AS_TOKEN"], {"msgtype": "m.text", "body": f"floor {i}"})
                assert status == 200, status
        return run

    started = time.perf_counter()
    in_parallel([direct(c, n) for c, n in zip(conversations, per)])
    floor = time.perf_counter() - started

    # The outage.
    with open(ENV["SYNAPSE_PID_FILE"]) as f:
        subprocess.run(["kill", "-KILL", f.read().strip()], check=True)
    while synapse_answers():
        time.sleep(0.1)

    def accept(c, n):
        def run():
            for i in range(n):
                body = f"drain {tag} {c['id']} {i}"
                status, view = request("POST", f"{api}/v1/conversations/{c['id']}/messages", c["token"], {"body": body})
                assert status == 202, (status, view)
                c["bodies"].append(body)
        return run

    started = time.perf_counter()
    in_parallel([accept(c, n) for c, n in zip(conversations, per)])
    accepting = time.perf_counter() - started
    outage_started = time.perf_counter()

    up = subprocess.Popen([os.path.join(ROOT, "scripts", "stack"), "up"], env=dict(os.environ, BRIDGE_SKIP_BUILD="1"),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not synapse_answers():
        time.sleep(0.05)
    back = time.perf_counter()
    back_at = time.time()
    cpu_before = {part: cpu_seconds(part) for part in PARTS}
    outage = back - outage_started

    # A conversation's newest message sent means all of it is: delivery is
    # in acceptance order (the read-back from Synapse below checks it). One
    # message a look, once a second, so the polling adds little to what the
    # emulator has to serve while the retry function drains.
    def delivered(c):
        status, page = request("GET", f"{api}/v1/conversations/{c['id']}/messages?limit=1", c["token"])
        return status == 200 and [m["status"] for m in page["messages"]] == ["sent"] and \
            page["messages"][0]["body"] == c["bodies"][-1]

    waiting = list(conversations)
    while waiting:
        waiting = [c for c in waiting if not delivered(c)]
        if waiting:
            if time.perf_counter() - back > 1800:
                raise SystemExit(f"{len(waiting)} conversations not drained after 30 minutes")
            time.sleep(1.0)
    drain = time.perf_counter() - back
    cpu = {part: cpu_seconds(part) - cpu_before[part] for part in PARTS
           if cpu_before[part] is not None and cpu_seconds(part) is not None}
    up.wait()

    # In order, once each, as a Matrix client reads the rooms.
    reordered = missing = 0
    landed = []  # origin_server_ts (ms) of every drained message
    for c in conversations:
        url = (f"{hs}/_matrix/client/v3/rooms/{urllib.parse.quote(c['room'])}/messages?dir=b&limit=1000"
               f"&user_id={urllib.parse.quote(c['puppet'])}")
        _, page = request("GET", url, ENV["MATRIX_AS_TOKEN"])
        drained = [e for e in reversed(page["chunk"])
                   if e["type"] == "m.room.message" and e["content"].get("body", "").startswith(f"drain {tag} ")]
        seen = [e["content"].get("body") for e in drained]
        landed += [e["origin_server_ts"] for e in drained]
        missing += len(set(c["bodies"]) - set(seen))
        reordered += int(seen != c["bodies"])

    print(f"{messages} messages over {count} conversations ({per[0]} each), accepted through the API in "
          f"{accepting:.1f} s while Synapse was down (killed); Synapse answered again {outage:.1f} s after the "
          f"last was accepted.")
    print()
    print("| | time (s) | × floor |")
    print("| --- | --- | --- |")
    print(f"| floor: {messages} sends straight to Synapse, one appservice client, a stream per room | {floor:.1f} | 1.0 |")
    print(f"| drain: from Synapse answering until every message is `sent` | {drain:.1f} | {drain / floor:.1f} |")
    print()
    print(f"Read back from Synapse: {missing} missing, {reordered} of {count} rooms out of order.")
    if landed:
        first, last = min(landed) / 1000 - back_at, max(landed) / 1000 - back_at
        print()
        print(f"Where the drain's time goes (Synapse's timestamps): the first message landed {first:.1f} s after "
              f"Synapse answered again (the back-off of the jobs handed back during the outage), the last "
              f"{last:.1f} s after ({len(landed) / max(last - first, 0.001):.1f} messages/s in between).")
    if cpu:
        busy = ", ".join(f"{part} {seconds:.1f} s ({100 * seconds / drain:.0f}%)" for part, seconds in cpu.items())
        print()
        print(f"CPU time each part of the stack used during the drain (share of the drain's wall time): {busy}. "
              f"moto serves one request at a time, and Synapse is one Python process: near 100%, either "
              f"bounds the drain.")


if __name__ == "__main__":
    main()
