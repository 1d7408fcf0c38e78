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
