"""The version of session-expiry: the one place it is written (setup.py reads this file's text)."""

__version__ = "0.2.0"
