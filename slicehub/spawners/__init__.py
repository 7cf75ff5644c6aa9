"""Slicehub's spawners: the slice catalogue, inventory, allocator, options form and spawners.

Submodules are imported where used; importing the package has no side effects.
"""
