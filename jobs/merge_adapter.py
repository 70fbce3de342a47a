"""Merge a LoRA front point into a full Hugging Face model folder, for use outside ParetoRL.

    python jobs/merge_adapter.py runs/<sweep>/.../checkpoint_000003 merged/
    python jobs/merge_adapter.py s3://bucket/runs/<sweep>/.../checkpoint_000003 merged/

A LoRA trial's checkpoint is a PEFT adapter folder (adapter_config.json, adapter_model.safetensors,
the tokenizer's files) whose adapter_config.json names its base policy. This loads that base,
applies the adapter (PEFT's merge_and_unload) and writes config.json, model.safetensors and the
tokenizer: a folder transformers, vLLM or TRL load like any other model. Without merging, PEFT
loads the adapter on its base directly: `PeftModel.from_pretrained(base_model, checkpoint)`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
try:
    import paretorl  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(ROOT / "platform"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a LoRA checkpoint folder (or s3:// URI): the front's `checkpoint` column")
    p.add_argument("out_dir", help="where to write the merged model (must not exist)")
    args = p.parse_args(argv)

    from paretorl import storage
    from paretorl.models.build import merge_adapter
    from paretorl.models.lora import is_adapter_dir

    out = Path(args.out_dir)
    if out.exists():
        print(f"error: {out} exists; choose a new folder", file=sys.stderr)
        return 2
    if not storage.exists(args.checkpoint):
        print(f"error: checkpoint not found: {args.checkpoint}", file=sys.stderr)
        return 2
    if not is_adapter_dir(storage.local_copy(args.checkpoint)):
        print(f"error: {args.checkpoint} has no adapter_config.json: it is not a LoRA checkpoint (a full model's checkpoint is already a model folder)", file=sys.stderr)
        return 2
    merge_adapter(args.checkpoint, out)
    print(f"merged model written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
