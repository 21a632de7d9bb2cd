"""What the test suites share: helpers and builders, no fixtures (those live in conftest.py files)."""
