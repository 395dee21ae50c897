"""Tests of ``crispedit_lite.fastproject``."""
