"""The trace-replay simulator (event engine, trace readers, reports).

It drives `scheduler.core.decide` on a virtual clock; it arrives with its own issue.
"""
