"""The read side of operations: queue and job statistics, ``/metrics`` and the throughput chart.
Nothing on the sending path imports it."""
