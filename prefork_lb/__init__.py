"""prefork_lb: an HTTP/1.1 load balancer on a Gunicorn master and gevent workers.

Importing the package imports nothing heavy: the master imports ``config``,
``shared`` and ``hooks`` only, so urllib3 is first imported in each worker,
after gevent has patched it.
"""

__version__ = "0.1.0"
