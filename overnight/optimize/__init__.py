"""Optuna studies driven through the queue (``overnight optimize``): each trial is a task of one
snapshot with its params set in the command, told to the study as soon as its task ends.

space (``--param`` texts -> Optuna distributions), settings (a study's settings as stored in
Redis), storage (Optuna's storage: its Redis journal on the same Redis, or a URL; the one module
that imports optuna at its top), lease (one driver per study), driver (one step: finish, report,
prune, ask, enqueue), detached (the agents' side of ``--detach``).
"""
