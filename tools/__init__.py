"""Developer tools run from a checkout (``make readme``); not part of the ``st_pipeline`` wheel."""
