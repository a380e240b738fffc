"""Extensions shipped with prefork_lb, each a small class to use as it is or to copy.

- ``api_key:ApiKey``: 401 unless a header carries one of the configured keys;
- ``rate_limit:RateLimit``: a token bucket per client IP (or header value),
  shared by all workers; 429 with ``Retry-After``;
- ``canary:Canary``: requests with a given header or cookie go to one backend.
"""
