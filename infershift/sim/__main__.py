"""`python -m infershift.sim ...`: run one or more simulated vLLM servers in this process."""
from __future__ import annotations

import asyncio
import signal
import sys

from .cli import instance_name, parse_args
from .profiles import get_profile
from .server import ServerConfig, SimServer


async def serve(ns) -> None:
    profile = get_profile(ns.profile).scaled(
        time_scale=ns.time_scale, tensor_parallel=ns.tensor_parallel_size,
        gpu_memory_utilization=ns.gpu_memory_utilization)
    servers = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for i in range(ns.servers):
            port = ns.port + i if ns.port else 0
            cfg = ServerConfig(
                profile=profile, model=ns.model, served=ns.served_model_name, adapters=ns.adapters,
                max_loras=ns.max_loras, max_cpu_loras=ns.max_cpu_loras, max_num_seqs=ns.max_num_seqs,
                num_gpu_blocks=ns.num_gpu_blocks, block_size=ns.block_size,
                max_model_len=ns.max_model_len, max_num_batched_tokens=ns.max_num_batched_tokens,
                max_waiting=ns.max_waiting, seed=ns.seed, error_rate=ns.error_rate,
                error_status=ns.error_status, slow_start_seconds=ns.slow_start_seconds,
                stream_coalesce=ns.stream_coalesce_ms / 1000, admin_on_serving_port=ns.admin_port == "same")
            name = instance_name(i, ns.servers, ns.pod_name, ns.served_model_name[0], ns.port)
            s = SimServer(cfg, name)
            admin = None if ns.admin_port == "same" else (ns.admin_port + i if ns.admin_port else 0)
            servers.append(s)
            bound = await s.start(ns.host, port, admin)
            admin_url = f"http://{ns.host}:{s.admin_port if s.admin_port is not None else bound}"
            print(f"sim: {s.name} listening on http://{ns.host}:{bound} profile={profile.name} "
                  f"model={ns.served_model_name[0]} blocks={s.engine.kv.num_blocks} admin={admin_url}", flush=True)
        await stop.wait()
    finally:
        for s in servers:
            await s.stop()


def main(argv=None) -> None:
    ns = parse_args(argv)
    for n in ns.notes:
        print(f"sim: note: ignoring vLLM flag {n!r} (no effect in the simulator)", file=sys.stderr)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve(ns))
    except OSError as e:
        print(f"sim: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
