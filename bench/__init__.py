"""The benchmarks: scripts run as `python -m bench.<name>` (or `make bench-<name>`, `make loadtest`,
`make soak`), and the library modules they share (the modules whose names start with `_`).

A script imports library modules only, never another script; a library module imports other
library modules and the project, never a script.
"""
