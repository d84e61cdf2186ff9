"""Evaluation: metrics and intervals, the colour baseline, figures, the report."""
