"""Record the series the decision tests replay (testdata/recorded_series.json): consecutive
windows of the stable and the canary pool of the rollout stack, on the local stack (real Envoy,
pickers, simulators) at 25 % canary under steady load, for a healthy canary, one answering 5 %
errors (30 % of attempts), and one whose first token is delayed (the simulator's faults).

    .venv/bin/python tests/rollout/record_series.py   # ~1 minute; rewrites the JSON
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from infershift.devstack.stack import LocalStack, Options  # noqa: E402
from infershift.devstack.traffic import Load, chat_body  # noqa: E402
from infershift.rollout.metrics import MetricsPages, Side, window  # noqa: E402
from infershift.spec.config_path import set_many_in_file  # noqa: E402

WINDOWS, SECONDS = 8, 3.0
# the canary pool has one replica, and the gateway retries a 5xx once (on the picker's fallback,
# here the same replica): of 30 % injected errors about 9 % reach the clients and the picker
CONDITIONS = {"healthy": {}, "errors-30pct": {"error_rate": 0.3, "error_status": 500},
              "ttft-delay-100ms": {"delay_seconds": 0.1}}


def main() -> int:
    directory = Path(tempfile.mkdtemp(prefix="rollout-series-"))
    file = directory / "Pulumi.rollout.yaml"
    shutil.copyfile(HERE / "testdata" / "Pulumi.rollout.yaml", file)
    set_many_in_file(file, {"routes.route.backends.pool-v1": 75, "routes.route.backends.pool-v2": 25})
    stack = LocalStack(file, Options(auto_ports=True, time_scale=20.0, poll_interval="200ms", workdir=directory / "w"),
                       log=lambda m: None)
    stack.start()
    out: dict = {"recorded": time.strftime("%Y-%m-%d"), "stack": "tests/rollout/testdata/Pulumi.rollout.yaml",
                 "canaryPercent": 25, "windowSeconds": SECONDS, "conditions": {}}
    try:
        pod = next(p for p, group in stack.pod_service().items() if group == "v2")
        pages = MetricsPages({p: [f"http://127.0.0.1:{stack.pools[p].metrics_port}/metrics"] for p in stack.pools})
        url = stack.url("http") + "/v1/chat/completions"
        with Load(url, chat_body("mymodel", max_tokens=16), concurrency=4):
            for name, faults in CONDITIONS.items():
                stack.set_faults(pod, **{"error_rate": 0.0, "delay_seconds": 0.0, **faults})
                time.sleep(1.0)
                series = []
                before = pages.snapshot(["pool-v1", "pool-v2"])
                for _ in range(WINDOWS):
                    time.sleep(SECONDS)
                    after = pages.snapshot(["pool-v1", "pool-v2"])
                    series.append({"canary": window(before["pool-v2"], after["pool-v2"], Side("pool-v2")).to_json(),
                                   "stable": window(before["pool-v1"], after["pool-v1"], Side("pool-v1")).to_json()})
                    before = after
                out["conditions"][name] = {"faults": faults, "windows": series}
                print(name, [(w["canary"]["responses"], w["canary"]["errors"]) for w in series], flush=True)
    finally:
        stack.stop()
        shutil.rmtree(directory, ignore_errors=True)
    (HERE / "testdata" / "recorded_series.json").write_text(json.dumps(out, indent=0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
