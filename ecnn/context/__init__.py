"""Context models: integer probability tables, and the rate estimator everybody shares (:mod:`ecnn.context.rate`).

Nothing here imports torch or any later stage (coder, select, container, codec).
"""
