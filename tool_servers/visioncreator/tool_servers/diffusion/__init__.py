"""Real image generation with diffusers: the ``diffusers`` and ``tiny`` back ends.

Importing this package is cheap; torch and diffusers load when a back end is built.
"""
