"""Helpers the tests share (an importable package: `from tests.helpers.models import make_model`)."""
