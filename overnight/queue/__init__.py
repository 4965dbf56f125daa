"""Redis and RQ: the task store, queues, logs and blobs."""
