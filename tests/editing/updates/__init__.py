"""Tests of ``crispedit_lite.editing.updates``."""
