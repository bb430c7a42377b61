"""Helpers every stage uses: errors, atomic files, signal handling, optional extras, geometry, bounded JSON.

Nothing here imports another part of vitexport (the one-way order in docs/design.md).
"""
