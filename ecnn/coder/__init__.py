"""Entropy coding on top of constriction: integers in, bytes out.

Nothing here imports torch or any later stage (container, codec).
"""
