"""Experiments over many runs: ``mghft sweep`` (every config x seed), ``mghft compare`` (the tables, with paired
tests) and the reproduction plan. Submodules are imported when used; this package imports nothing heavy."""
