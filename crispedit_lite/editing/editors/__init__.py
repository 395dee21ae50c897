"""One module per editor, or per method with its sequential form.

Each module defines ``EDITORS`` (see :mod:`crispedit_lite.editing.registry`) and, where the method has
settings of its own, their :class:`~crispedit_lite.editing.settings.EditorSettings` class.
"""
