"""community-pulse pure core.

Everything in this package is standard-library Python: the activity model and its
validation, scoring, period and window maths, the Redis key layout and the planning of
a batch's effects. Nothing here performs I/O or reads the clock; callers pass the time in.
"""
