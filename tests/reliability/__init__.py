"""Reliability: kill and resume, distributed runs, bad input, numerical faults, atomic outputs."""
