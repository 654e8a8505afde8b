"""Rules the code keeps: checked on the source, so a change that breaks one fails here."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_PARAMETERS = 8


def parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Parameters a caller passes: every kind, ``self`` and ``cls`` left out."""
    args = function.args
    names = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return sum(1 for a in names if a is not None and a.arg not in ("self", "cls"))


@pytest.mark.parametrize("package", ["jobs", "service"])
def test_no_function_in_the_engine_or_the_service_takes_more_than_8_parameters(package):
    wide = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({parameters(node)})"
        for path in sorted((ROOT / package).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and parameters(node) > MAX_PARAMETERS
    ]
    assert not wide, f"functions with over {MAX_PARAMETERS} parameters: {wide}"
