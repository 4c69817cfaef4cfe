import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.simpool import SimPool, SimSpec  # noqa: E402


@pytest.fixture
def sim_pool(tmp_path):
    """Two real simulated servers in one process, stopped (process group killed) afterwards."""
    pool = SimPool(SimSpec(servers=2, processes=1, num_gpu_blocks=4096, max_num_seqs=64,
                           aliases=("critical-chat", "batch-chat")), tmp_path / "sims")
    pool.start()
    yield pool
    pool.stop()
