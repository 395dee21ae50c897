"""Tests of ``crispedit_lite.reproduction``."""
