"""Run as a script: train 3 steps, checkpoint, train 1 more; a fresh engine restored from the
checkpoint must take the same 4th step bit for bit (optimizer moments and RNG restored)."""

import os
import sys
import tempfile
from pathlib import Path

os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], DS_ACCELERATOR="cpu")

import torch  # noqa: E402

from paretorl.config import TrainConfig  # noqa: E402
from paretorl.learner import checkpoint as ckpt  # noqa: E402
from paretorl.learner.policy import make_engine  # noqa: E402


class Tok:  # the checkpoint saves a tokenizer; this test needs none
    def save_pretrained(self, path):
        pass


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 1))

    def forward(self, x):
        return self.body(x)

    def save_pretrained(self, path, safe_serialization=True, state_dict=None):  # HF's signature
        from safetensors.torch import save_file

        save_file(state_dict if state_dict is not None else self.state_dict(), str(Path(path) / "model.safetensors"))


def step(engine, x):
    loss = engine(x).pow(2).mean()  # dropout: the step also depends on torch's RNG
    engine.backward(loss)
    engine.step()


cfg = TrainConfig(micro_batch_size=4, lr=1e-2)
x = torch.randn(4, 8)
net = Net()
engine = make_engine(net, cfg, 4, 1)
for _ in range(3):
    step(engine, x)
tmp = Path(tempfile.mkdtemp())
ckpt.save(tmp, engine, net, Tok(), {"step": 3}, rank=0)
step(engine, x)
expected = [p.detach().clone() for p in net.parameters()]

fresh = Net()
engine2 = make_engine(fresh, cfg, 4, 1)
state = ckpt.restore(tmp, engine2, rank=0)
assert state["step"] == 3, state
step(engine2, x)
diff = max((a - b).abs().max().item() for a, b in zip(expected, fresh.parameters()))
print(f"RESUME_MAX_DIFF {diff}")
