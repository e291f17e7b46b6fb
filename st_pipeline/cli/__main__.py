"""``python -m st_pipeline.cli``: the same as the ``st-pipeline`` command."""

from st_pipeline.cli import run

run()
