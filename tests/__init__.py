"""The test suite; its folders mirror the package ``crispedit_lite``."""
