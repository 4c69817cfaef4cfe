import json
import subprocess
import time

from prometheus_client.parser import text_string_to_metric_families


async def stream_times(sess, url, body):
    """POST a streaming request; returns (ttft, [token arrival times], chunks)."""
    body = dict(body, stream=True)
    t0 = time.monotonic()
    times, chunks = [], []
    async with sess.post(url, json=body) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                break
            c = json.loads(data)
            chunks.append(c)
            if c["choices"]:
                ch = c["choices"][0]
                text = ch.get("text") if "text" in ch else ch["delta"].get("content")
                if text:
                    times.append(time.monotonic() - t0)
    return times[0], times, chunks


async def scrape(sess, base):
    async with sess.get(base + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def value(metrics, name, **labels):
    for s in metrics[name]:
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError((name, labels))


def stop_group(p: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True, and its children: TERM, then KILL."""
    from infershift.proc import stop_group as stop

    stop(p, 10)
