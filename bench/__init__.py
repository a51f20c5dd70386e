"""Benchmarks: ``python -m bench`` runs them all; ``python -m bench.<name>`` runs one.

Everything runs on this machine's loopback: the bench creates its own PostgreSQL database, starts
its own redis-server, postfix's smtp-sink, gunicorn and huey consumers on free ports, and stops
and drops all of them at the end. Figures are printed and appended to ``docs/benchmarks.md``.
"""
