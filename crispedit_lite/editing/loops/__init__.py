"""What drives a model during an edit.

The FT-M trainer, the projected-gradient loop, sequential chunks, the closed-form layer loop, and the
keys and target values of locate-then-edit editors.
"""
