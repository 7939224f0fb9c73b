"""Telephony logic, free of threads: events, flows, command builders, time routing."""
