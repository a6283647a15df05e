"""Database backends for the test suite only (selected by aimconsole/settings/test.py)."""
