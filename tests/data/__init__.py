"""Tests of ``crispedit_lite.data``."""
