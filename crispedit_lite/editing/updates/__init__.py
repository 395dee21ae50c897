"""Pure tensor math of the closed-form updates (MEMIT, AlphaEdit, ROME, UltraEdit).

Each is tested against its normal equations.
"""
