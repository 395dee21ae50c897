"""Whole-book checks: the notebooks' conventions and the built book in a browser."""
