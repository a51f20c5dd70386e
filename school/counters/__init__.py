"""The write side of operations: counts, timings and heartbeats that every process adds to one
shared store (Redis, or a SQLite file on one machine). Sending calls it on every message; nothing
here reads the database or imports what reads."""
