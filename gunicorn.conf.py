"""Gunicorn settings for prefork_lb: settings and hooks only, no logic of its own.

Run with ``gunicorn -c gunicorn.conf.py``; gunicorn's command-line flags
(``--bind``, ``--workers``, ``--log-level``, ...) override what is set here.
The balancer's own settings come from PREFORK_LB_* variables or the TOML file
named by PREFORK_LB_CONFIG (see README.rst).
"""

import os

from prefork_lb import hooks, tls

# The app factory runs in each worker, after gevent has patched it.
wsgi_app = "prefork_lb.wsgi:create_app()"
# gunicorn's gevent worker, with deadlines on slow clients (prefork_lb/worker.py).
worker_class = "prefork_lb.worker.Worker"
workers = os.cpu_count() or 1
worker_connections = 1000
# A proxy forwards any method token (RFC 9110 section 9.1), lower-case or custom.
permit_unconventional_http_method = True
# Never preload: urllib3 must be imported after gevent patches the worker, and
# the shared state is made by the on_starting hook, not at import time.
preload_app = False

# Header names with "_" are dropped (nginx: underscores_in_headers off), so
# "X_Forwarded_For" never reaches a backend as X-Forwarded-For. "dangerous" is
# refused at start: it would let "Transfer_Encoding" frame the body.
header_map = "drop"

# gunicorn's C request parser (gunicorn-h1c, a dependency): "fast" makes a
# worker fail at start rather than fall back to the slower Python parser
# unnoticed. It refuses what the Python parser refuses (tests/integration/
# test_hostile_requests.py runs with it); the balancer's own checks stay.
http_parser = "fast"

# The balancer decides whom to trust with X-Forwarded-* (PREFORK_LB_TRUSTED_PROXIES);
# gunicorn must not let a client's X-Forwarded-Proto change wsgi.url_scheme.
forwarded_allow_ips = ""
# gunicorn 27 opens ~/.gunicorn/gunicorn.ctl by default, shared by every instance
# of the same user; two balancers on one host would fight over it.
control_socket_disable = True

# TLS on the front is gunicorn's: --certfile and --keyfile (and --ca-certs,
# --cert-reqs, --ciphers). This hook only moves the handshake into gunicorn's
# connection handler, so that a failed one is logged as a line, not a traceback.
ssl_context = tls.ssl_context

accesslog = "-"
# The same access line as gunicorn's Logger, made with less work per request.
logger_class = "prefork_lb.accesslog.AccessLogger"
# Total time (M, ms), the backend's time to its response head, how many
# other backends were tried first, the X-Request-ID the backend got, and for
# a tunnel (status 101, logged when it ends) its bytes up/down.
access_log_format = (
    '%(h)s "%(r)s" %(s)s %(B)s %(M)sms pid=%(p)s '
    "backend=%({prefork_lb.backend}e)s upstream=%({prefork_lb.upstream_time}e)ss "
    "retries=%({prefork_lb.retries}e)s error=%({prefork_lb.error}e)s "
    "id=%({prefork_lb.request_id}e)s tunnel=%({prefork_lb.tunnel}e)s"
)

on_starting = hooks.on_starting
on_reload = hooks.on_reload
when_ready = hooks.when_ready
pre_fork = hooks.pre_fork
child_exit = hooks.child_exit
post_worker_init = hooks.post_worker_init
on_exit = hooks.on_exit
