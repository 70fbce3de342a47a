"""A byte-level BPE tokenizer trained on a task's own text.

Byte-level, so any text a task produces (or a model emits) round-trips; digits are split
one per token so arithmetic stays learnable for tiny models. Saved with `save_pretrained`,
so HF, the embedded engine and vLLM all load the same files.
"""

from __future__ import annotations

from collections.abc import Iterable

PAD, BOS, EOS, SEP = "<pad>", "<bos>", "<eos>", "<sep>"


def build_tokenizer(texts: Iterable[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, SEP],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, sep_token=SEP)


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """<bos> prompt <sep>: the model answers after <sep>."""
    return [tokenizer.bos_token_id, *tokenizer.encode(prompt, add_special_tokens=False), tokenizer.sep_token_id]


def encode_completion(tokenizer, completion: str) -> list[int]:
    """completion <eos>: EOS is part of the response (and of its length)."""
    return [*tokenizer.encode(completion, add_special_tokens=False), tokenizer.eos_token_id]


def decode_completion(tokenizer, ids: list[int]) -> str:
    """Response ids -> text for the verifier; the EOS and padding are dropped."""
    return tokenizer.decode([i for i in ids if i not in (tokenizer.eos_token_id, tokenizer.pad_token_id)])
