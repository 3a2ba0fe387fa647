"""Batches, jobs, worker processes, the checkpoint store and events."""
