#!/usr/bin/env python3
"""What reading the tokens from Secrets Manager costs a cold start.

Runs the `send` function binary as Lambda would (bench/lambda_bench.py's
loopback Runtime API, against the local stack) `colds` times with the
`as_token` in `MATRIX_AS_TOKEN` (local use) and `colds` times with it in a
Secrets Manager secret on moto (`MATRIX_AS_TOKEN_SECRET_ARN`, as deployed),
alternating, and prints the init and first-invocation medians of both.
Warm invocations read no secret; the last column checks that.

Usage: .local/tools/bin/python bench/secrets_bench.py <bin-dir> [colds=10] [invocations=20]
(the tools venv has boto3, which creates the secret on moto).
"""

import statistics
import sys
import uuid

import boto3

import lambda_bench as bench


def main():
    bin_dir = sys.argv[1]
    colds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    invocations = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    env = bench.ENV
    secrets = boto3.client(
        "secretsmanager",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    arn = secrets.create_secret(Name=f"bench-as-token-{uuid.uuid4().hex[:8]}",
                                SecretString=env["MATRIX_AS_TOKEN"])["ARN"]
    conversation, user = f"bench-{uuid.uuid4().hex[:8]}", "bencher"
    bench.provision(conversation, user)
    event = bench.load_event("send-message-plain")
    events = [bench.aimed(event, conversation, user, {"body": f"bench {n}"}) for n in range(invocations)]
    binary = f"{bin_dir}/send"
    stored = dict(env)
    del stored["MATRIX_AS_TOKEN"]
    stored["MATRIX_AS_TOKEN_SECRET_ARN"] = arn
    results = {"environment value": ([], [], []), "Secrets Manager": ([], [], [])}
    for _ in range(colds):
        for name, settings in (("environment value", env), ("Secrets Manager", stored)):
            bench.ENV = settings
            init, latencies, _ = bench.run(binary, events, "send")
            inits, firsts, warms = results[name]
            inits.append(init)
            firsts.append(latencies[0])
            warms.append(statistics.median(latencies[1:]))
    print("| as_token from | init p50 (ms) | init max (ms) | first invocation p50 (ms) | warm p50 (ms) |")
    print("| --- | --- | --- | --- | --- |")
    for name, (inits, firsts, warms) in results.items():
        print(f"| {name} | {statistics.median(inits) * 1000:.1f} | {max(inits) * 1000:.1f} | "
              f"{statistics.median(firsts) * 1000:.1f} | {statistics.median(warms) * 1000:.1f} |")


if __name__ == "__main__":
    main()
