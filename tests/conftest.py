"""Settings for the whole suite."""

from hypothesis import settings

# The machine is shared and noisy: a per-example time limit would fail tests
# for being slow, which is not what they test. Speed is measured in benchmarks.
settings.register_profile("prefork_lb", deadline=None)
settings.load_profile("prefork_lb")
