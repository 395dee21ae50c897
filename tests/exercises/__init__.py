"""Tests of ``crispedit_lite.exercises``."""
