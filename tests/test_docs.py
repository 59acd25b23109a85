"""The README and docs/ stay true: every file they link to or name exists, and the line
numbers the README gives for dqn.py are where those definitions are."""

import ast
import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", *sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))]


@pytest.mark.parametrize("page", PAGES)
def test_every_file_a_page_links_to_or_names_exists(page):
    text = open(os.path.join(REPO, page), encoding="utf-8").read()
    links = [t for t in re.findall(r"\]\(([^)#\s]+)", text) if "://" not in t]
    for target in links:  # relative to the page
        assert os.path.exists(os.path.join(REPO, os.path.dirname(page), target)), target
    named = re.findall(r"`((?:benchmarks|tests|docs)/[\w./-]+\.(?:py|md|txt|sh|png|gif))`", text)
    for path in named:  # relative to the repository
        assert os.path.exists(os.path.join(REPO, path)), path
    assert links or page != "README.md"


def test_the_readmes_line_numbers_for_dqn_py_are_true():
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    tree = ast.parse(open(os.path.join(REPO, "dqn.py"), encoding="utf-8").read())
    where = {n.name: (n.lineno, n.end_lineno) for n in tree.body if hasattr(n, "name")}  # def, class
    cited = re.findall(r"`(\w+)`\s+\(lines? (\d+)(?:-(\d+))?\)", text)
    assert len(cited) >= 8
    for name, start, end in cited:
        assert where[name][0] == int(start), (name, where[name])
        assert not end or where[name][1] == int(end), (name, where[name])
