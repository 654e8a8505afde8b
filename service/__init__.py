"""The HTTP service (point and bbox queries, upscaling jobs); built on ``jobs``."""
