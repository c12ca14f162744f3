"""Scale-out: media worker processes behind one front listener, and nodes sharing a Redis room
directory. Without `cluster.redis_url` and with one worker, none of this runs."""
