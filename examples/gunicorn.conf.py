"""gunicorn configuration: uvicorn workers on npaio.

    cd examples && gunicorn -c gunicorn.conf.py asgi_app:app

The same, without the file:

    cd examples && gunicorn -w 1 -k npaio.workers.UvicornWorker asgi_app:app

Other npaio workers: npaio.workers.GunicornWebWorker (aiohttp.web apps, e.g.
aiohttp_server:app) and npaio.workers.ASGIWorker (gunicorn's own ASGI worker).
"""
bind = '127.0.0.1:8000'   # -b on the command line wins
workers = 1
worker_class = 'npaio.workers.UvicornWorker'
graceful_timeout = 5
