"""Storage: dtabs, versions and watches in Redis (embedded ``redis-server`` by default)."""
