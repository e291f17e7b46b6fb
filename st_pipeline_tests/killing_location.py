"""The project's code location with a sync that kills its process where the test says (``killing.py``).

The crash tests that run syncs in Dagster processes (``dagster asset materialize -m``, a daemon's
run workers) point at this module instead of ``st_pipeline.definitions``:
``ST_PIPELINE_TEST_KILL_AT=page_committed:2`` in their environment makes each run process die by
SIGKILL the second time it commits a page. Unset, it is the project's code location as it is.
"""

from st_pipeline.definitions import build_definitions
from st_pipeline.settings import load_settings
from st_pipeline_tests.killing import KillAt

defs = build_definitions(load_settings(), sync_observer=KillAt.from_environment())
