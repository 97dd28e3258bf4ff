"""Test helpers of event-tracker: real processes and broker set-ups, never fakes.

A test-only workspace member: the services never install it.
"""
