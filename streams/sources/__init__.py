"""Normalizers: platform payloads (GitHub, Discord, Discourse, conference tooling, PyPI,
surveys) to activity events of the contract.

One pure module per platform, standard library only. Each normalizer returns a
:class:`~streams.sources.normalized.Normalized` or a
:class:`~streams.sources.normalized.Skipped` with a counted reason; none raises on a
strange payload. ``docs/sources.md`` lists which platform fields each one reads.
"""
