"""Fixtures of the analysis tests: the hand-made MLflow record (see hand_made_record.py)."""

from tests.analysis.hand_made_record import hand_made_record  # noqa: F401  (a session fixture)
