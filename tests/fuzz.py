"""schemathesis against a real orderproj, as an integrator would run it: the
command line over /api/openapi.json with every check and every phase
(examples, coverage, fuzzing, stateful), once anonymous and once as staff.

The full lane runs it bounded and with a fixed seed
(tests/e2e/test_api_fuzz.py); `make fuzz` runs `python -m tests.fuzz` with a
random seed and many more examples. Either prints schemathesis's report: each
failure with a curl command that repeats its request, and the seed, which
`make fuzz FUZZ_SEED=<seed>` runs again (docs/developers/testing.md).

The stack runs as a deployment does (DEBUG off, a secret key, one allowed
host), over plain HTTP on 127.0.0.1 (secure cookies off). Before the runs it
holds a delivery and FAILED orders, offered to the fuzzer as path values
beside the ones it makes up; then its qcluster is stopped, so that only
requests write and tests/fuzz_hooks.py can hold every refused request to
writing nothing.
"""

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.stack import PROJECT_DIR, Stack, make_stack

# The lane's run: fixed, and bounded to about half a minute per identity.
LANE_SEED = 20_211
LANE_EXAMPLES = 8
# `make fuzz`'s default.
DEEP_EXAMPLES = 200
PHASES = "examples,coverage,fuzzing,stateful"
IDENTITIES = ("anonymous", "staff")
# A stream never ends by itself: its read stops after one event (an order's
# history has one while no worker runs) or after this long.
STREAM_SECONDS = 1.0
REQUEST_SECONDS = 10.0


def deployed_env() -> dict[str, str]:
    return {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "SESSION_COOKIE_SECURE": "0",
        "CSRF_COOKIE_SECURE": "0",
        "METRICS_TOKEN": secrets.token_urlsafe(24),
        "ORDER_PLACE_RATE_LIMIT": "0",
        "ORDER_SIMULATION_ENABLED": "1",
    }


@dataclass
class Target:
    stack: Stack
    # Dictionary name -> values (config): real ids for the path parameters.
    test_data: dict[str, list[str]]


@contextlib.contextmanager
def fuzz_target(workdir: Path):
    """A deployed stack on a SQLite file in `workdir`, prepared; stopped at the
    end."""
    stack = make_stack(workdir, **deployed_env())
    try:
        yield prepare(stack)
    finally:
        stack.stop()


def prepare(stack: Stack) -> Target:
    """Start `stack`, let its workers make the test data, stop them."""
    stack.start()
    test_data = make_test_data(stack)
    stack.stop_cluster()
    return Target(stack, test_data)


def make_test_data(stack: Stack) -> dict[str, list[str]]:
    """A delivery to complete and orders to retry, made by the workers."""
    completed = stack.place()
    failed = [stack.place(failure="permanent") for _ in range(3)]
    codes = [stack.wait_for_terminal(completed["order_id"])["delivery"]["code"]]
    failed_ids = []
    for order in failed:
        assert stack.wait_for_terminal(order["order_id"])["status"] == "FAILED"
        failed_ids.append(order["order_id"])
    return {"deliveries": codes, "failed_orders": failed_ids}


def config(target: Target, identity: str, workdir: Path) -> str:
    """schemathesis.toml for one run (TOML written as JSON values, which TOML's
    basic strings, numbers and arrays accept)."""
    data = target.test_data
    lines = [
        "hooks = " + json.dumps("tests.fuzz_hooks"),
        f"request-timeout = {REQUEST_SECONDS}",
        # Its cache of earlier failures goes with the run: a seed replays a run.
        "[cache]",
        "directory = " + json.dumps(str(workdir / f"cache-{identity}")),
        "[dictionaries.deliveries]",
        "values = " + json.dumps(data["deliveries"]),
        "[dictionaries.failed_orders]",
        "values = " + json.dumps(data["failed_orders"]),
        "[[operations]]",
        'include-operation-id = ["orderEvents", "allEvents"]',
        f"request-timeout = {STREAM_SECONDS}",
        "max-stream-events = 1",
        "[[operations]]",
        'include-operation-id = "completeDelivery"',
        '[operations.parameters."path.code"]',
        'dictionary = "deliveries"',
        "probability = 0.3",
        "[[operations]]",
        'include-operation-id = "retryOrder"',
        '[operations.parameters."path.order_id"]',
        'dictionary = "failed_orders"',
        "probability = 0.3",
    ]
    if identity == "staff":
        session = staff_credentials(target.stack)
        lines += [
            # A staff operation that only ever answers 401/403 is a failure.
            "[warnings]",
            'fail-on = ["missing_auth"]',
            *(
                line
                for scheme, value in session.items()
                for line in (
                    f"[auth.openapi.{scheme}]",
                    ("bearer" if scheme == "metricsToken" else "api_key")
                    + " = "
                    + json.dumps(value),
                )
            ),
        ]
    return "\n".join(lines) + "\n"


def staff_credentials(stack: Stack) -> dict[str, str]:
    """A value for each security scheme of the document: a staff session logged
    in through the admin, its CSRF token, the metrics token."""
    client = stack.staff_client()
    try:
        csrf = client.cookies["csrftoken"]
        return {
            "session": client.cookies["sessionid"],
            "csrfCookie": csrf,
            "csrf": csrf,
            "metricsToken": stack.env["METRICS_TOKEN"],
        }
    finally:
        client.close()


def run(
    target: Target,
    identity: str,
    *,
    seed: int,
    max_examples: int,
    workdir: Path,
    workers: int = 1,
) -> subprocess.CompletedProcess:
    """One schemathesis run; its output (the report) in `.stdout`."""
    config_file = workdir / f"schemathesis-{identity}.toml"
    config_file.write_text(config(target, identity, workdir))
    stack = target.stack
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config_file),
        "run",
        f"{stack.base_url}/api/openapi.json",
        "--checks",
        "all",
        "--phases",
        PHASES,
        "--seed",
        str(seed),
        "--max-examples",
        str(max_examples),
        "--workers",
        str(workers),
        "--report",
        "json",
        "--report-json-path",
        str(report_path(workdir, identity)),
    ]
    env = {
        **os.environ,
        "FUZZ_DATABASE_URL": stack.env["DATABASE_URL"],
        "NO_COLOR": "1",
        "COLUMNS": "100",
    }
    return subprocess.run(
        command,
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
        check=False,
    )


def report_path(workdir: Path, identity: str) -> Path:
    return workdir / f"schemathesis-{identity}.json"


def report(workdir: Path, identity: str) -> dict:
    """schemathesis's JSON report of a run: exit code, operations tested, each
    phase's status, failures, errors, warnings."""
    return json.loads(report_path(workdir, identity).read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--seed", type=int, default=secrets.randbelow(2**31))
    parser.add_argument("--max-examples", type=int, default=DEEP_EXAMPLES)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--identity", choices=IDENTITIES, action="append")
    args = parser.parse_args(argv)
    failed = []
    with tempfile.TemporaryDirectory(prefix="orderproj-fuzz-") as tmp:
        workdir = Path(tmp)
        with fuzz_target(workdir) as target:
            for identity in args.identity or IDENTITIES:
                print(f"== schemathesis, {identity}, seed {args.seed}", flush=True)
                result = run(
                    target,
                    identity,
                    seed=args.seed,
                    max_examples=args.max_examples,
                    workdir=workdir,
                    workers=args.workers,
                )
                print(result.stdout, flush=True)
                if result.returncode != 0:
                    failed.append(identity)
    if failed:
        print(
            f"Failures ({', '.join(failed)}); run them again with: "
            f"python -m tests.fuzz --seed {args.seed} "
            f"--max-examples {args.max_examples}"
        )
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orderproj.settings")
    sys.exit(main())
