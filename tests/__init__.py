"""The test suite, a package so its helpers (`tests/_*.py`) are imported one way from any folder:
`from tests import _tiny_data as tiny` (pyproject.toml puts the repository root on the path)."""
