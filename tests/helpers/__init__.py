"""Helpers shared by the tests (imported as ``helpers.*``; tests/ is on sys.path)."""
