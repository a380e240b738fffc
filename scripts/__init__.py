"""Programs that run beside prefork_lb; the load test's Python half is ``scripts.bench``."""
