"""A plotly figure as one self-contained HTML file that also renders inside MLflow's artifact viewer.

MLflow 3 shows an HTML artifact in an iframe made from a Blob URL with `sandbox="allow-scripts"`:
an opaque origin, so nothing relative to the page can load, and MLflow serves `.js` artifacts as
text/plain with `nosniff`, so a script cannot come from another artifact either. plotly.js must
therefore travel inside the file. It guards its own localStorage use, so inline it renders there;
what costs is its size (4.8 MB). Stored gzip-compressed and base64-encoded (2.0 MB), unpacked by
the browser's DecompressionStream and run as an inline script, it is 2.4x smaller per file.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
from pathlib import Path

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>html,body{{height:100%;margin:0;overflow:hidden}}#figure{{width:100%;height:100%}}#status{{font:14px sans-serif;padding:1em;color:#555}}</style>
</head><body>
<div id="figure"><p id="status">Loading the interactive plot...</p></div>
<script id="plotlyjs-gzip" type="application/octet-stream">{plotlyjs}</script>
<script id="figure-json" type="application/json">{figure}</script>
<script>
(async () => {{
  const status = document.getElementById("status");
  try {{
    const packed = Uint8Array.from(atob(document.getElementById("plotlyjs-gzip").textContent), c => c.charCodeAt(0));
    const code = await new Response(new Blob([packed]).stream().pipeThrough(new DecompressionStream("gzip"))).text();
    const script = document.createElement("script");
    script.textContent = code;  // an inline script: allowed in MLflow's sandboxed iframe, unlike a src
    document.head.appendChild(script);
    const figure = JSON.parse(document.getElementById("figure-json").textContent);
    status.remove();
    await Plotly.newPlot("figure", figure.data, figure.layout, {{responsive: true, displaylogo: false}});
  }} catch (err) {{
    status.textContent = "The plot could not be drawn here (" + err + "). It needs a browser with DecompressionStream (Chrome 80+, Firefox 113+, Safari 16.4+); the PNG beside this file shows the same figure.";
  }}
}})();
</script>
</body></html>
"""


@functools.lru_cache(maxsize=1)
def packed_plotlyjs() -> str:
    """plotly.js (the version the plotly package ships), gzip level 9, base64: computed once per process."""
    from plotly.offline import get_plotlyjs

    return base64.b64encode(gzip.compress(get_plotlyjs().encode(), compresslevel=9, mtime=0)).decode("ascii")


def write_figure_html(fig, path: str | Path) -> Path:
    """Write `fig` (a plotly Figure) as a page that fills its window (or MLflow's pane) and needs nothing else.

    The figure's layout should not fix a width or height: the page sizes it to the frame and
    follows resizes.
    """
    path = Path(path)
    title = fig.layout.title.text or "figure"
    figure = fig.to_json().replace("</", "<\\/")  # a "</script>" in a label must not end the JSON block
    path.write_text(PAGE.format(title=html.escape(title), plotlyjs=packed_plotlyjs(), figure=figure))
    return path
