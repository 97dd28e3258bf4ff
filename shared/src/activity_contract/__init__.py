"""The event-tracker contract: event models, queue topology and settings pieces.

Both services import this package; it imports neither of them.
"""
