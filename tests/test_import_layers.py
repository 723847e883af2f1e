"""The package's layering: building blocks never import the layers above them."""

import ast

from tests.import_layers import PACKAGE, import_graph, violations


def test_no_forbidden_arrows_in_the_package():
    assert violations(import_graph()) == []


def test_the_graph_sees_real_arrows_and_flags_a_forbidden_one(tmp_path):
    pkg = tmp_path / "adasparse_lab"
    (pkg / "models").mkdir(parents=True)
    (pkg / "study").mkdir()
    (pkg / "models" / "net.py").write_text("from adasparse_lab.study.driver import x\n")
    (pkg / "study" / "driver.py").write_text(
        "import adasparse_lab.models.net\nfrom adasparse_lab.study import y\n"
    )
    (pkg / "models" / "__main__.py").write_text("from adasparse_lab.study.driver import x\n")
    graph = import_graph(pkg)
    assert graph == {"models": {"study"}, "study": {"models"}, "models.__main__": {"study"}}
    assert violations(graph) == ["models -> study"]


def test_no_function_in_the_package_is_over_60_lines():
    """Each function reads in one screen (the lean-code rule): split it or use a library."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} {lines}")
    assert long == []
