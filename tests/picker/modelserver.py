"""Small model servers for the picker's data-plane tests: vLLM- or SGLang-format /metrics whose
values the test sets, /v1/models, and OpenAI completion endpoints that echo the model they got.

Several servers run in one process (one per port, like several target ports of one pod).
Run: python -m tests.picker.modelserver SPEC_JSON   where SPEC is a list of
{"port", "name", "models": [...], "adapters": [...], "style": "vllm"|"sglang"}.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time

from aiohttp import web


class Server:
    def __init__(self, spec: dict):
        self.port = spec["port"]
        self.name = spec["name"]
        self.models = spec.get("models", [])
        self.adapters = spec.get("adapters", [])
        self.style = spec.get("style", "vllm")
        self.state = {"waiting": 0, "running": 0, "kv": 0.0, "running_loras": [], "waiting_loras": [],
                      "max_lora": spec.get("max_lora", 4), "status": 200, "delay": 0.0, "metrics_status": 200,
                      # a whole metrics page to serve instead (e.g. a golden page of another engine), and
                      # a delay before /v1/models answers
                      "page": spec.get("page"), "models_delay": 0.0,
                      # report the requests really being answered as running (on top of `running`)
                      "live_running": False}
        self.seen: list[dict] = []
        self.in_flight = 0

    def metrics_text(self) -> str:
        s = dict(self.state)
        if s["live_running"]:
            s["running"] = s["running"] + self.in_flight
        if self.style == "sglang":
            return (f'# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs{{model_name="{self.models[0]}"}} {s["waiting"]}\n'
                    f'sglang:num_running_reqs{{model_name="{self.models[0]}"}} {s["running"]}\n'
                    f'sglang:token_usage{{model_name="{self.models[0]}"}} {s["kv"]}\n')
        lines = [
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f'vllm:num_requests_waiting{{engine="0",model_name="{self.models[0]}"}} {float(s["waiting"])}',
            f'vllm:num_requests_running{{engine="0",model_name="{self.models[0]}"}} {float(s["running"])}',
            f'vllm:kv_cache_usage_perc{{engine="0",model_name="{self.models[0]}"}} {float(s["kv"])}',
            f'vllm:lora_requests_info{{max_lora="{s["max_lora"]}",running_lora_adapters="{",".join(s["running_loras"])}",'
            f'waiting_lora_adapters="{",".join(s["waiting_loras"])}"}} {time.time()}',
            'vllm:cache_config_info{block_size="16",num_gpu_blocks="4096"} 1.0',
        ]
        # A histogram's worth of lines the parser has to skip.
        lines += [f'vllm:e2e_request_latency_seconds_bucket{{le="{b}",model_name="m"}} 0.0' for b in range(40)]
        return "\n".join(lines) + "\n"

    async def metrics(self, request):
        if self.state["metrics_status"] != 200:
            return web.Response(status=self.state["metrics_status"])
        page = self.state["page"]
        if isinstance(page, dict):  # one page per path
            page = page.get(request.path)
            if page is None:
                return web.Response(status=404)
        if page is not None:
            return web.Response(text=page, content_type="text/plain")
        return web.Response(text=self.metrics_text(), content_type="text/plain")

    async def list_models(self, request):
        if self.state["models_delay"]:
            await asyncio.sleep(self.state["models_delay"])
        data = [{"id": m, "object": "model", "owned_by": "test", "parent": None} for m in self.models]
        data += [{"id": a, "object": "model", "owned_by": "test", "parent": self.models[0]} for a in self.adapters]
        return web.json_response({"object": "list", "data": data})

    async def admin(self, request):
        if request.method == "POST":
            self.state.update(await request.json())
            if (await request.text()).find("reset_seen") >= 0:
                self.seen.clear()
        return web.json_response({"state": self.state, "seen": self.seen})

    async def complete(self, request):
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        self.seen.append({"path": request.path, "model": body.get("model"), "len": len(raw),
                          "headers": {k.lower(): v for k, v in request.headers.items()
                                      if k.lower().startswith(("x-", "content-"))}})
        self.in_flight += 1
        try:
            return await self._answer(request, body, raw)
        finally:
            self.in_flight -= 1

    async def _answer(self, request, body, raw):
        if self.state["delay"]:
            await asyncio.sleep(self.state["delay"])
        hdrs = {"x-inference-pod": self.name, "x-served-port": str(self.port)}
        if self.state["status"] != 200:
            return web.json_response({"error": {"message": "injected", "type": "server_error", "param": None,
                                                "code": None}}, status=self.state["status"], headers=hdrs)
        model = body.get("model")
        if body.get("stream"):
            resp = web.StreamResponse(headers={**hdrs, "content-type": "text/event-stream"})
            await resp.prepare(request)
            for i in range(3):
                chunk = {"id": "c1", "object": "text_completion", "model": model,
                         "choices": [{"index": 0, "text": f"tok{i}"}]}
                data = f"data: {json.dumps(chunk)}\n\n".encode()
                # Split each event in two writes so the picker sees a "model" cut across chunks.
                await resp.write(data[:20])
                await resp.write(data[20:])
            if (body.get("stream_options") or {}).get("include_usage"):  # as vLLM: a last chunk with usage
                usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8,
                         "prompt_tokens_details": {"cached_tokens": 2}}
                await resp.write(f"data: {json.dumps({'id': 'c1', 'choices': [], 'usage': usage})}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        return web.json_response({"id": "c1", "object": "text_completion", "model": model,
                                  "choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
                                 headers=hdrs)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/prometheus/metrics/", self.metrics)  # where trtllm-serve serves its page
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_route("*", "/admin", self.admin)
        app.router.add_post("/v1/completions", self.complete)
        app.router.add_post("/v1/chat/completions", self.complete)
        app.router.add_get("/hello", lambda r: web.Response(text=self.name, headers={"x-inference-pod": self.name}))
        return app


async def main(specs: list[dict]) -> None:
    runners = []
    for spec in specs:
        runner = web.AppRunner(Server(spec).app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", spec["port"]).start()
        runners.append(runner)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
