"""The README and the docs site: short, factual, built without warnings, reference complete.

The configuration reference is generated from the pydantic models by docs/hooks/config_reference.py
on every build; these tests hold the models to having a description on every field, and the
built page to listing every TrialConfig field.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "docs" / "hooks" / "config_reference.py"
# history ("6 until 2026-12-05") belongs in the git log; a date stays only beside a measurement
HISTORY = re.compile(r"(until|before|since) 20[0-9][0-9]-[0-9][0-9]")
MEASUREMENT = re.compile(r"\bhost\b|`[^`]*(python|pytest|jobs/|benchmarks/)[^`]*`")


def _hook():
    spec = importlib.util.spec_from_file_location("config_reference", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _doc_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_readme_is_a_landing_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    quick = text.split("## Quick start", 1)[1]
    first_block = quick.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert first_block[0].startswith("bash scripts/install.sh && .venv/bin/python jobs/sweep.py ")
    # .ci/run runs this one
    assert first_block[1].startswith("bash scripts/install.sh && .venv/bin/python -m pytest -q tests ")


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = {link.split("#", 1)[0] for link in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in link}
    missing = sorted(t for t in targets if t and not (ROOT / t).exists())
    assert not missing, f"README links to files that do not exist: {missing}"


def test_history_is_not_in_the_docs():
    offending = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in _doc_files()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if HISTORY.search(line) and not MEASUREMENT.search(line)
    ]
    assert not offending, "say what is true now; how it used to be belongs in the git log:\n" + "\n".join(offending)


def test_history_check_catches_a_dated_change():
    assert HISTORY.search("6 until 2026-12-05: with 0.6 s steps") and not MEASUREMENT.search("6 until 2026-12-05")
    assert MEASUREMENT.search("before 2026-12-02, this 2-vCPU host, `.venv/bin/python jobs/sweep.py`")


def test_every_config_field_has_a_description():
    hook = _hook()
    missing = sorted(
        {f"{owner.__module__}.{owner.__name__}.{name} ({path})"
         for _, _, root, _ in hook.roots()
         for path, owner, name, info in hook.walk(root)
         if not (info.description or "").strip()}
    )
    assert not missing, "add Field(description=...) to: " + ", ".join(missing)


def _trial_config_paths(hook):
    from paretorl.config import TrialConfig

    return [path for path, *_ in hook.walk(TrialConfig)]


def test_reference_walks_nested_sections():
    paths = _trial_config_paths(_hook())
    assert {"train.lr", "algo.objective", "rollout.vllm.kv_cache_space_gib", "faults.crash_at_step"} <= set(paths)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs or mkdocs-material is not installed: `pip install -e '.[docs]'` (scripts/install.sh installs it)")
    out = tmp_path_factory.mktemp("site")
    # no --quiet: mkdocs counts the warnings that --strict turns into a failure only when they are logged
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_site_builds_strict(site):
    assert (site / "index.html").is_file()
    assert (site / "reference" / "configuration" / "index.html").is_file()


def test_reference_lists_every_trial_config_field(site):
    html = (site / "reference" / "configuration" / "index.html").read_text(encoding="utf-8")
    missing = [path for path in _trial_config_paths(_hook()) if f"<code>{path}</code>" not in html]
    assert not missing, f"not in the built configuration reference: {missing}"
