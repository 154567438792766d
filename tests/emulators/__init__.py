"""Test-support emulators of external services (never imported by the bgci package)."""
