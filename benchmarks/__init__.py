"""`pulse bench`: each benchmark runs its baseline beside it and reports the ratio."""
