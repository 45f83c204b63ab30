"""airspeed velocity benchmarks of fastres (see asv.conf.json at the repository top)."""
