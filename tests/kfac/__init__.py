"""Tests of ``crispedit_lite.kfac``."""
