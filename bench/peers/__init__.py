"""Peer implementations of the scoring + leaderboard job, measured beside ours (S3)."""
