"""What several relay nodes share: the Redis connection (:mod:`.redisconn`), and the node registry beside it."""
