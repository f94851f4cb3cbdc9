"""Sphinx configuration of mspt's documentation: ``python -m sphinx -W -b html docs docs/_build/html``."""

import importlib.metadata
import importlib.util
import re

project = "mspt"
author = "mspt developers"
copyright = "mspt developers"
try:
    release = importlib.metadata.version("mspt")
except importlib.metadata.PackageNotFoundError:  # building from a source tree without the package installed
    release = "unknown"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
]
templates_path = ["_templates"]
exclude_patterns = ["_build", "examples"]

autosummary_generate = True
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "description"
# PyTorch is optional: document mspt.torch even where it is not installed.
autodoc_mock_imports = [] if importlib.util.find_spec("torch") else ["torch"]

html_theme = "alabaster"
html_static_path = []


# mspt's docstrings follow the house style: "name : description" lines whose continuations are indented,
# under optional numpydoc-like headings ("Parameters" over a line of dashes). reStructuredText would read
# the fields as ragged definition lists and the headings as misplaced section titles (and napoleon would
# take each description for a type), so this hook renders every heading as a rubric and every field as a
# paragraph of its own: the documentation builds with warnings as errors from the docstrings as written.
_FIELD = re.compile(r"^(\s*)(\S[^:]*?) : (.*)$")
_NAME = re.compile(r"^\*{0,2}[A-Za-z_][\w, ]*$")  # argument names, also *args / **kwargs


def _escape_substitutions(text: str) -> str:
    """``|`` outside inline literals starts a substitution reference in reST; in a docstring it is an
    absolute value or a norm."""
    parts = text.split("``")
    return "``".join(part if i % 2 else part.replace("|", "\\|") for i, part in enumerate(parts))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _is_heading(lines: list[str], i: int) -> bool:
    if i + 1 >= len(lines) or not lines[i].strip():
        return False
    rule = lines[i + 1].strip()
    return len(rule) >= 3 and set(rule) <= set("-=~") and len(rule) >= len(lines[i].strip())


def _house_style_fields(app, what, name, obj, options, lines):
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        if _is_heading(lines, i):
            out.extend(["", " " * _indent(line) + ".. rubric:: " + line.strip(), ""])
            i += 2
            continue
        match = _FIELD.match(line)
        if match is None or line.lstrip().startswith((":", "..", "* ", "- ", ">>>")):
            if out and out[-1].strip() and line.strip() and _indent(line) < _indent(out[-1]):
                out.append("")  # a dedent ends the block above it
            out.append(line)
            i += 1
            continue
        indent, field, rest = len(match.group(1)), match.group(2), match.group(3)
        text = [f"``{field}`` : {rest}" if _NAME.match(field) else line.strip()]
        i += 1
        while i < len(lines) and lines[i].strip() and _indent(lines[i]) > indent:
            text.append(lines[i].strip())
            i += 1
        if out and out[-1].strip():
            out.append("")
        out.extend([" " * indent + " ".join(text), ""])
    lines[:] = _escape_substitutions("\n".join(out)).split("\n")


def setup(app):
    app.connect("autodoc-process-docstring", _house_style_fields)
