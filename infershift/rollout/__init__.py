"""Progressive rollouts judged on LLM SLOs, driven by stack config (issue 15).

- `window`: what one side (stable or canary) did over one window: latency histograms, response
  counts by outcome, output tokens;
- `decide`: the gates' verdicts on a canary window against the stable one;
- `metrics`: windows from Prometheus (HTTP query API) or straight from the pickers' /metrics;
- `controller` and `__main__`: `python -m infershift.rollout run|status|abort NAME -s STACK`.
"""
