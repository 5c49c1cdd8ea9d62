"""Planning (pure), the trtllm-build argv, stage caches and build orchestration."""
