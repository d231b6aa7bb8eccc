"""gunicorn configuration: uvicorn workers on npaio.

    gunicorn -c examples/gunicorn.conf.py --chdir examples asgi_app:app

The same, without the file:

    gunicorn --chdir examples -w 1 -k npaio.workers.UvicornWorker asgi_app:app

Other npaio workers: npaio.workers.GunicornWebWorker (aiohttp.web apps, e.g.
aiohttp_server:app) and npaio.workers.ASGIWorker (gunicorn's own ASGI worker).
"""
bind = '127.0.0.1:8000'   # -b on the command line wins
workers = 1
worker_class = 'npaio.workers.UvicornWorker'
graceful_timeout = 5
