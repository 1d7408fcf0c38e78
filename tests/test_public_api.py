"""The public API in gemma_turns.__init__ is complete and importable."""

import importlib

import gemma_turns


def test_all_names_exist():
    for name in gemma_turns.__all__:
        assert hasattr(gemma_turns, name), name


def test_all_is_complete():
    """Public names load on first use: the table of their homes is __all__, each name is
    defined in its home module, and nothing else public is in the package namespace."""
    from gemma_turns import _HOMES

    assert set(_HOMES) == set(gemma_turns.__all__) - {"__version__"}
    for name, module in _HOMES.items():
        assert name in vars(importlib.import_module(f"gemma_turns.{module}")), (name, module)
    public = {name for name in vars(gemma_turns) if not name.startswith("_")}
    modules = {name for name, value in vars(gemma_turns).items() if type(value).__name__ == "module"}
    assert public - modules - {"importlib", "TYPE_CHECKING"} <= set(gemma_turns.__all__)


def test_the_command_starts_before_numpy_loads():
    """`import gemma_turns.cli` is cheap: Ctrl-C and errors are handled by main() before the
    heavy imports (numpy, sentencepiece) that the subcommands bring."""
    import subprocess
    import sys

    code = "import sys, gemma_turns.cli; print(sorted(m for m in ('numpy', 'sentencepiece') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_ctrl_c_while_the_subcommands_load_is_exit_130(monkeypatch, capsys):
    from gemma_turns import cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["format", "-"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_version_matches_metadata():
    from importlib.metadata import version

    assert gemma_turns.__version__ == version("gemma-turns")


def test_imports_run_downward():
    """Only the encoder imports sentencepiece; no library module imports the CLI."""
    import ast
    from pathlib import Path

    package = Path(gemma_turns.__file__).parent
    for path in package.rglob("*.py"):
        relative = path.relative_to(package).as_posix()
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {
            ("." * node.level) + (node.module or "")
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
        }
        if "sentencepiece" in imported:
            assert relative == "encoder.py", relative
        if not relative.startswith("cli/") and relative != "__main__.py":
            assert not any(name.lstrip(".").startswith("cli") for name in imported), relative
        if relative == "arrays.py":  # the numpy layer knows no tokenizer and no chat format
            assert not {name for name in imported if name.startswith(".")} - {".errors"}, imported
