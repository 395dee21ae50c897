"""What the book's pages use to show things: toy models, diagrams, plotting, CPU tables, sweeps, run reports.

Nothing in the method, the editors or the reproduction pipeline imports from here.
"""
