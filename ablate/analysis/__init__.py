"""From a study's run table to its report: choose on val, report on test, check the articles' claims, draw."""

from ablate.analysis.pipeline import analyze

__all__ = ["analyze"]
