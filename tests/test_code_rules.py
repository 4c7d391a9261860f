"""Structural rules of the code base (issue 11), checked on the source itself.

- no module in the product's packages is over MAX_LINES lines;
- every public module-level function and class, and every public method of a
  public class, has a docstring;
- only ``scoring/layout.py`` spells the storage layout's file names;
- only ``scoring/times.py`` converts time zones;
- the installed package imports itself by its one name (``batch_scoring.scoring``, never a
  bare ``scoring``) and never reaches for the repository around it (issue 12).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("scoring", "ingest_sim", "sensor_db", "plugins/batch_scoring", "dags")
MAX_LINES = 420  # the "~400"
LAYOUT = REPO / "scoring" / "layout.py"
TIMES = REPO / "scoring" / "times.py"
# A string constant that is a piece of a path ending in one of the layout's file names (no spaces:
# prose that names a file, such as an error message's way out, is not a path being built).
LAYOUT_LITERAL = re.compile(r"[^\s]*(_manifest\.json|\.receipt\.json|_report\.html|_heatmap\.png|_stale\.json|"
                            r"aggregates\.parquet|model\.joblib|manifest\.json)")
TZ_CONVERSION = re.compile(r"tz_localize\(None\)|replace\(tzinfo=None\)|tz_convert\(")


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """String constants in ``path`` that are not docstrings, with their line numbers."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_the_rules_see_the_code():
    names = {p.relative_to(REPO).as_posix() for p in modules()}
    assert {"scoring/layout.py", "scoring/times.py", "plugins/batch_scoring/dag.py", "dags/batch_scoring_dag.py"} <= names
    assert len(names) > 30


def test_no_module_is_over_the_size_limit():
    big = {p.relative_to(REPO).as_posix(): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def test_every_public_definition_has_a_docstring():
    missing = []
    for path in modules():
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                if ast.get_docstring(node) is None:
                    missing.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
                if isinstance(node, ast.ClassDef):
                    for item in node.body:
                        if (isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith("_")
                                and ast.get_docstring(item) is None
                                and not any(isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list)):
                            missing.append(f"{path.relative_to(REPO)}:{item.lineno} {node.name}.{item.name}")
    assert missing == []


def test_only_the_layout_module_spells_file_names():
    found = [f"{p.relative_to(REPO)}:{line} {text!r}" for p in modules() if p != LAYOUT
             for line, text in _code_strings(p) if LAYOUT_LITERAL.fullmatch(text)]
    assert found == []


def test_only_the_times_module_converts_time_zones():
    found = [f"{p.relative_to(REPO)}:{i}" for p in modules() if p != TIMES
             for i, line in enumerate(p.read_text().splitlines(), 1) if TZ_CONVERSION.search(line)]
    assert found == []


@pytest.mark.parametrize("source", ['f"{key}/_manifest.json"', '"dev1/s1.receipt.json"', 'name + "/model.joblib"',
                                    'f"{device}/{sensor}/manifest.json"'])
def test_the_layout_rule_catches_a_built_name(source):
    strings = [n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert any(LAYOUT_LITERAL.fullmatch(text) for text in strings)


def test_the_layout_rule_lets_prose_name_a_file():
    assert not LAYOUT_LITERAL.fullmatch("redeploy the model (model.joblib and manifest.json under ")


@pytest.mark.parametrize("sample", ['ts.tz_convert("UTC").tz_localize(None)', "t.astimezone(u).replace(tzinfo=None)"])
def test_the_time_rule_catches_a_conversion(sample):
    assert TZ_CONVERSION.search(sample)


BARE_IMPORT = re.compile(r"^\s*(?:from|import) (?:scoring|sensor_db|ingest_sim|plugins)(?:[.\s]|$)", re.M)
REPO_REACH = re.compile(r"__file__.*(\.parent\.parent|parents\[)|\bREPO\b")


def test_the_package_imports_itself_by_its_one_name():
    """`scoring`, `sensor_db`, `ingest_sim` are folders of the checkout; installed, they exist only under batch_scoring."""
    found = [f"{p.relative_to(REPO)}:{m.group(0).strip()}" for p in modules() for m in BARE_IMPORT.finditer(p.read_text())]
    assert found == []
    assert BARE_IMPORT.search("from scoring.times import utc_naive") and not BARE_IMPORT.search("from batch_scoring.scoring import x")


def test_the_package_reads_no_file_of_the_repository():
    """Nothing installed may find its way to files beside the package (a wheel has no checkout around it)."""
    found = [f"{p.relative_to(REPO)}:{line} {text!r}" for p in modules()
             for line, text in enumerate(p.read_text().splitlines(), 1)
             if REPO_REACH.search(text) and not text.lstrip().startswith("#")]
    found += [f"{p.relative_to(REPO)}:{line} {text!r}" for p in modules()
              for line, text in _code_strings(p) if re.fullmatch(r"\S*requirements[^/\s]*\.(lock|txt)", text)]
    assert found == []
    assert REPO_REACH.search('LOCK = REPO / "requirements.lock"') and REPO_REACH.search("Path(__file__).resolve().parents[2]")
    assert REPO_REACH.search("REPO_ROOT = Path(__file__).resolve().parent.parent")
    assert not REPO_REACH.search("SCORING_DIR = Path(__file__).resolve().parent")
