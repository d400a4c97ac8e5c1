"""Context models: integer probability tables and exact rate estimates.

Nothing here imports torch or any later stage (coder, container, codec).
"""
