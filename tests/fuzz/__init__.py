"""Fuzzing the file loader and the CLI with damaged and hostile files (see harness.py)."""
