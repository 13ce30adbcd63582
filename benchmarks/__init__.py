"""Benchmarks: each ``p*.py`` module measures prelabel against a baseline in one run; ``run`` prints the table."""
