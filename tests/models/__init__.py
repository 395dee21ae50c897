"""Tests of ``crispedit_lite.models``."""
