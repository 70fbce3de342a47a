"""A byte-level BPE tokenizer trained on a task's own text.

Byte-level, so any text a task produces (or a model emits) round-trips; digits are split
one per token so arithmetic stays learnable for tiny models. Saved with `save_pretrained`,
so HF, the embedded engine and vLLM all load the same files. The encode/decode helpers below
serve that tokenizer and a pretrained model's own (chat template) alike: learner, evaluation
and SFT have one code path.
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
    """The prompt's ids, ending where the model's answer begins; chosen by the tokenizer.

    The project's own tokenizer (it has <sep>): <bos> prompt <sep>. A pretrained chat model: its
    own chat template with one user turn and the assistant header (add_generation_prompt). A
    pretrained model without a template: <bos> (if it has one) and the prompt text.
    """
    if tokenizer.sep_token_id is not None:
        return [tokenizer.bos_token_id, *tokenizer.encode(prompt, add_special_tokens=False), tokenizer.sep_token_id]
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        return tokenizer.encode(text, add_special_tokens=False)
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    return [*bos, *tokenizer.encode(prompt, add_special_tokens=False)]


def encode_completion(tokenizer, completion: str) -> list[int]:
    """completion <eos>: EOS is part of the response (and of its length); for a chat model the
    EOS is the end of the assistant turn (e.g. <|im_end|>)."""
    return [*tokenizer.encode(completion, add_special_tokens=False), tokenizer.eos_token_id]


def decode_completion(tokenizer, ids: list[int]) -> str:
    """Response ids -> text for the verifier; the EOS and padding are dropped."""
    return tokenizer.decode([i for i in ids if i not in (tokenizer.eos_token_id, tokenizer.pad_token_id)])
