"""The public API in gemma_turns.__init__ is complete and importable."""

import gemma_turns


def test_all_names_exist():
    for name in gemma_turns.__all__:
        assert hasattr(gemma_turns, name), name


def test_all_is_complete():
    public = {name for name in vars(gemma_turns) if not name.startswith("_")}
    modules = {name for name, value in vars(gemma_turns).items() if type(value).__name__ == "module"}
    assert public - modules == set(gemma_turns.__all__) - {"__version__"}


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
