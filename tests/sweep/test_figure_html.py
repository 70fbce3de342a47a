"""The interactive front's HTML: self-contained, no storage access, plotly.js packed inside."""

from __future__ import annotations

import base64
import gzip
import json
import re

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from paretorl.report.figure_html import write_figure_html
from paretorl.report.front_files import write_front
from paretorl.search.pareto import pareto_front

MAX, MIN = "eval/pass_at_4", "eval/mean_tokens"


def block(page: str, block_id: str) -> str:
    return re.search(rf'<script id="{block_id}"[^>]*>(.*?)</script>', page, re.S).group(1)


def test_the_page_needs_nothing_outside_itself(tmp_path):
    fig = go.Figure(go.Scatter(x=[1, 2], y=[0.5, 0.7], text=["a </script><script>alert(1)</script>", "b"]))
    page = write_figure_html(fig, tmp_path / "f.html").read_text()
    # nothing to load: MLflow's sandboxed Blob iframe resolves no relative URL and runs no .js artifact
    assert not re.search(r"\b(src|href)\s*=", page)
    # the bootstrap never touches storage, which throws in an opaque origin
    bootstrap = re.sub(r'<script id="(plotlyjs-gzip|figure-json)".*?</script>', "", page, flags=re.S)
    assert not re.search(r"localStorage|sessionStorage|document\.cookie|indexedDB", bootstrap)
    # plotly.js travels packed: exactly the bundle the plotly package ships, 2.4x smaller
    assert gzip.decompress(base64.b64decode(block(page, "plotlyjs-gzip"))).decode() == get_plotlyjs()
    assert len(page) < 2_200_000 < len(get_plotlyjs())
    # the figure's JSON survives a "</script>" in a label, and fills the frame (no fixed size)
    figure = json.loads(block(page, "figure-json"))
    assert figure["data"][0]["text"][0].startswith("a </script>")
    assert "height" not in figure["layout"] and "width" not in figure["layout"]
    assert "html,body{height:100%" in page


def test_the_sweep_front_html_holds_every_point(tmp_path):
    points = [{"trial": str(i), "step": 2, MAX: acc, MIN: tok, "algo.alpha": 0.1} for i, (acc, tok) in enumerate([(0.2, 20), (0.6, 50), (0.5, 60)])]
    paths = write_front(points, pareto_front(points, MAX, MIN), MAX, MIN, tmp_path)
    figure = json.loads(block(paths["html"].read_text(), "figure-json"))
    checkpoints, front = figure["data"]
    assert sorted(checkpoints["x"]) == [20, 50, 60] and front["x"] == [20, 50]
