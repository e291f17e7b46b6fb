"""The README's generated sections: ``python -m tools.readme`` (``make readme``) rewrites them, ``--check`` compares.

``markdown`` holds the marker handling, the table helper and the sections that need no Dagster;
``generate`` the sections read from the code location's definitions and the command itself.
"""
