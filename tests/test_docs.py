"""The documentation builds with warnings as errors (the command the docs give), its API pages cover the
public operators and the torch wrappers, and the house-style docstring adapter in docs/conf.py turns
headings into rubrics and "name : description" fields into paragraphs. The build skips without Sphinx."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def load_conf():
    spec = importlib.util.spec_from_file_location("mspt_docs_conf", DOCS / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


def test_sphinx_builds_with_warnings_as_errors(tmp_path):
    pytest.importorskip("sphinx")
    html = tmp_path / "html"
    run = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-E", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"), str(DOCS), str(html)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    for page in ("installation", "operators", "ptychography", "embedding", "api"):
        assert (html / f"{page}.html").is_file(), page
    ops_page = (html / "generated" / "mspt.ops.html").read_text()
    documented = set(re.findall(r'id="mspt\.ops\.(\w+)"', ops_page))
    import mspt.ops

    assert set(mspt.ops.__all__) - {"LIKELIHOODS"} <= documented
    torch_page = (html / "generated" / "mspt.torch.html").read_text()
    assert {"multislice", "project", "rotation_update"} <= set(re.findall(r'id="mspt\.torch\.(\w+)"', torch_page))
    embedding = (html / "embedding.html").read_text()
    assert "torch.optim.Adam" in embedding and 'id="mspt.ops.ProjectionOperator"' in embedding


def code_blocks(page: str) -> list[str]:
    """The ``.. code-block:: python`` blocks of a page, dedented."""
    text = (DOCS / page).read_text()
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", text)
    return [textwrap.dedent(block) for block in blocks]


@pytest.mark.parametrize("page", ["operators.rst", "ptychography.rst", "tomography.rst", "embedding.rst", "joint.rst"])
def test_pages_code_runs_as_written(page):
    if page == "embedding.rst":
        pytest.importorskip("torch")
        pytest.importorskip("scipy")
    blocks = code_blocks(page)
    assert blocks, page
    scope = {}
    for block in blocks:  # one namespace per page: later blocks build on earlier ones
        exec(compile(block, page, "exec"), scope)


def test_house_style_fields_become_paragraphs():
    conf = load_conf()
    lines = [
        "Settings.",
        "",
        "Parameters",
        "----------",
        "size : (Z, Y, X) of the volume, or",
        '    "auto".',
        "**kw : passed on.",
        "Geometry",
        "    step_A : ray step |dx| in ``a |b| c``.",
        "    More text of the group.",
        "Execution",
        ":param x: left alone",
    ]
    conf._house_style_fields(None, "class", "Settings", None, None, lines)
    assert lines == [
        "Settings.",
        "",
        "",
        ".. rubric:: Parameters",
        "",
        '``size`` : (Z, Y, X) of the volume, or "auto".',
        "",
        "``**kw`` : passed on.",
        "",
        "Geometry",
        "",
        "    ``step_A`` : ray step \\|dx\\| in ``a |b| c``.",
        "",
        "    More text of the group.",
        "",
        "Execution",
        ":param x: left alone",
    ]
