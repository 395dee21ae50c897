"""Tests of ``crispedit_lite.evaluation``."""
