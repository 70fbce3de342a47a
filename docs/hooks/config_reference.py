"""The configuration reference, generated from the pydantic models on every `mkdocs build`.

`mkdocs.yml` names this file as a hook: `on_files` adds `reference/configuration.md`, rendered
from the models themselves (name, type, default, description of every field, nested sections
flattened to dotted paths), so the page cannot drift from the code. `tests/test_docs.py` calls
`roots()` and `walk()` to check that every field has a description.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[2]
PAGE = "reference/configuration.md"

if str(ROOT / "platform") not in sys.path:  # this checkout's package, not another install's
    sys.path.insert(0, str(ROOT / "platform"))


def roots() -> list[tuple[str, str, type, str]]:
    """(title, anchor, model, what it is) of each file the reference covers.

    The one place that names where the models live: when a module moves, change it here."""
    from paretorl.config import TrialConfig
    from paretorl.sweep.profiles import Profile
    from paretorl.search.space import SearchSpace

    return [
        ("Trial config", "trial-config", TrialConfig,
         "Every knob of one trial (`platform/paretorl/config.py`). A search space's `params` and "
         "`initial_points` name these fields by dotted path (`algo.alpha`), and its `trial:` "
         "section and a profile's `trial:` set them for every trial."),
        ("Search-space file", "search-space-file", SearchSpace,
         "The top level of a `searchspaces/*.yaml` file (`--space`)."),
        ("Profile file", "profile-file", Profile,
         "The top level of a `profiles/*.yaml` file (`--profile`): a partial search-space file."),
    ]


def _models_in(annotation: Any) -> list[tuple[type, str]]:
    """The pydantic models an annotation holds, each with the path step it adds:
    "" for a field of that model type, ".<name>" for the values of a dict."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, "")]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict and len(args) == 2:
        return [(model, ".<name>" + step) for model, step in _models_in(args[1])]
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return [found for arg in args for found in _models_in(arg)]
    return []


def walk(model: type, prefix: str = "") -> Iterator[tuple[str, type, str, Any]]:
    """(dotted path, model, field name, FieldInfo) of every field, nested models depth first."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path, model, name, info
        for sub, step in _models_in(info.annotation):  # a union's models (scheduler: fifo | moasha) one after the other
            yield from walk(sub, f"{path}{step}.")


def _type(annotation: Any) -> str:
    from pydantic import BaseModel

    if annotation is type(None):
        return "None"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type):
        return "section" if issubclass(annotation, BaseModel) else annotation.__name__
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(dict.fromkeys(_type(a) for a in args))
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (dict, list):
        return f"{origin.__name__}[{', '.join(_type(a) for a in args)}]"
    return str(annotation).replace("typing.", "")


def _constraints(info) -> str:
    signs = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return ", ".join(f"{signs[k]} {getattr(m, k)}" for m in info.metadata for k in signs if getattr(m, k, None) is not None)


def _default(info) -> str:
    from pydantic import BaseModel

    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{value!r}`"


def _anchor(root: str, path: str) -> str:
    """`rollout.vllm` in the trial config -> trial-config-rollout-vllm"""
    return f"{root}-{path.replace('.<name>', '').replace('.', '-')}"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the pydantic models by `docs/hooks/config_reference.py` on every docs build:",
        "every field with its type, constraints, default and description. Nested sections are",
        "written as dotted paths (`train.lr`); `<name>` stands for a key you choose. Unknown keys",
        "are refused everywhere.",
        "",
    ]
    for title, anchor, model, intro in roots():
        lines += [f"## {title} {{#{anchor}}}", "", intro]
        sections: dict[str | None, list[str]] = {}
        docs: dict[str | None, str] = {}
        for path, owner, name, info in walk(model):
            head = path.rsplit(".", 1)[0] if "." in path else None
            docs.setdefault(head, (owner.__dict__.get("__doc__") or "").strip() if head else "")
            limits = _constraints(info)
            kind = _type(info.annotation) + (f", {limits}" if limits else "")
            if _models_in(info.annotation):  # the section's own table, further down
                kind = kind.replace("section", f"[section](#{_anchor(anchor, path)})", 1)
            sections.setdefault(head, []).append(
                f"| `{path}` | {kind} | {_cell(_default(info))} | {_cell(info.description or '')} |"
            )
        for head, rows in sections.items():
            lines += ["", f"### `{head}` {{#{_anchor(anchor, head)}}}" if head else f"### {title}: top level", ""]
            if docs[head]:
                lines += [_cell(docs[head]), ""]
            lines += ["| key | type | default | description |", "|---|---|---|---|", *rows]
        lines.append("")
    return "\n".join(lines) + "\n"


def on_files(files, config):  # mkdocs hook
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files
