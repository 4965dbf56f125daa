"""One task's run on an agent: the task object, its pipeline from ``preparing`` to its end, its
process and supervision, its environment variables and uid, its log and its resource monitor."""
