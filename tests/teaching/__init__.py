"""Tests of ``crispedit_lite.teaching``."""
