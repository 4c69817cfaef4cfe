"""Token counting and the deterministic output text."""
import pytest

from infershift.sim.text import Output, marker, natural_length, prompt_key
from infershift.sim.tokens import block_hashes, count_tokens, render_chat


@pytest.mark.parametrize("key", [0, 4095, 123456789, 2**63 - 1])
def test_output_slices_agree_with_token_by_token_text(key):
    out = Output(3, "travel-helper-v1", key)
    whole = out.text(0, 9000)   # longer than the 4096-token stream: wraps around
    assert whole.startswith(marker("travel-helper-v1"))
    body = whole[len(marker("travel-helper-v1")):]
    assert len(body) == 9000 * 4
    assert "".join(out.text(i, i + 1) for i in range(9000)) == whole
    assert out.text(100, 300) == body[400:1200]


def test_text_depends_on_seed_model_and_prompt_only():
    k = prompt_key(1, "m", "hello")
    assert k == prompt_key(1, "m", "hello")
    assert len({k, prompt_key(2, "m", "hello"), prompt_key(1, "n", "hello"), prompt_key(1, "m", "hullo")}) == 4
    assert Output(1, "m", k).text(0, 20) == Output(1, "m", k).text(0, 20)
    assert Output(1, "m", k).text(1, 20) != Output(1, "canary", k).text(1, 20)
    assert 32 <= natural_length(k) < 512


def test_token_counts_and_prefix_blocks():
    assert count_tokens("") == 0 and count_tokens("abcd") == 1 and count_tokens("abcde") == 2
    a = block_hashes("x" * 64 * 3 + "tail", 16)
    b = block_hashes("x" * 64 * 2 + "y" * 64, 16)
    assert len(a) == 3 and a[:2] == b[:2] and a[2] != b[2]          # a chain: shared head, new tail
    assert block_hashes("x" * 128, 16, "lora-a") != block_hashes("x" * 128, 16)   # adapters apart
    assert block_hashes(list(range(40)), 16)[:2] == block_hashes(list(range(32)) + [0] * 16, 16)[:2]
    chat1 = render_chat([{"role": "system", "content": "S" * 100}, {"role": "user", "content": "a"}])
    chat2 = render_chat([{"role": "system", "content": "S" * 100}, {"role": "user", "content": "b"}])
    assert chat1[:100] == chat2[:100] and chat1 != chat2
    assert render_chat([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]) == \
        render_chat([{"role": "user", "content": "hi"}])
