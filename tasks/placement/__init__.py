"""Where stages run: one fresh process, shards over workers, remote dispatch, multi-process launch."""
