"""The Python half of scripts/loadtest.sh, one concern a module.

scripts/loadtest.sh starts and stops every process; what reads better in
Python runs as ``python -m scripts.bench COMMAND`` (see ``__main__``).
Standard library only: it runs with the project's .venv python.

  wrk          one run's figures, from the line done.lua makes wrk print
  procfs       /proc: liveness, children, memory, CPU time of a process tree
  results      a finished run's directory, and the figures derived from it
  formatting   figures as a person reads them
  table        the table printed at the end
  json_report  the same figures as JSON, with how and where they were made
  machine      cores, kernel, tool and package versions
  readiness    free ports; waiting until a server answers
  backend      the fallback backend server when nginx is not installed
  peer_wsgiproxy, peer_proxypy   the Python peers as balancers (run in their own
               virtualenv, .loadtest/peers-venv, by loadtest.sh)

scripts/compare-commits.sh runs ``python -m scripts.bench.compare`` (see there):
  callgrind      callgrind's Ir total, gunicorn's worker pid, from their files
  callgrind_run  one measurement: nginx, and one worker under valgrind
  instructions   instructions per request, and the table comparing revisions
"""
