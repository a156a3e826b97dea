"""Settings for the bare ceiling of `bench/ingest.py`: the project's settings, another URLconf.

Same middleware, parsers, logging and database options as the service, so the only difference
measured is what the real endpoint does beyond validating and inserting one row.
"""

from glowing_fiesta.settings import *  # noqa: F403

ROOT_URLCONF = "bench.bare_app"
