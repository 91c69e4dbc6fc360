"""Exact study of compounding occupancy shift in sequential multi-agent trust-region updates
(stale vs fresh data), with exponent fits and plots that also take measured {n: [values]} data."""
