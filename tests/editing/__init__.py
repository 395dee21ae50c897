"""Tests of ``crispedit_lite.editing``."""
