"""Helpers shared by the test modules (never a test module imported as a library)."""
from pathlib import Path

# the repository root: tests/support/__init__.py -> tests/support -> tests -> root
ROOT = Path(__file__).resolve().parents[2]
