"""The shared cache: versioned keys that every write can make stale at once (``versions``), and the
Redis backend that degrades to a miss when Redis is unreachable (``backend``)."""
