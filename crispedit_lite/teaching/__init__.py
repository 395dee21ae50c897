"""What the book's pages use to show things: toy models, diagrams, plotting, CPU tables, sweeps, run reports.

``parameter_sets`` holds the chapters' larger parameter sets (a free Colab T4). Nothing in the method,
the editors or the reproduction pipeline imports from here.
"""
