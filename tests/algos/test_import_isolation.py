"""``import paretorl.algos`` must stay light: no Ray, vLLM or DeepSpeed."""

import json
import subprocess
import sys

HEAVY = ("ray", "vllm", "deepspeed")


def test_import_does_not_pull_heavy_dependencies():
    code = (
        "import json, sys, paretorl.algos\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
