"""One module per editor; each defines ``EDITORS`` (see :mod:`crispedit_lite.editing.registry`)."""
