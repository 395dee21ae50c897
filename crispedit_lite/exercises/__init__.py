"""Graders for the book's exercises, one module per chapter (``ch01``, ``ch02``, ...).

Each grader takes the student's answer, raises ``AssertionError`` with a hint when it is wrong and
prints ``"correct"`` when it is right. The book runs them on the hidden reference solutions, so a
grader that could never fail would show up as a defect in review.
"""
