"""Tests of ``crispedit_lite.cli``."""
