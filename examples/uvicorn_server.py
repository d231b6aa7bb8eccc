"""uvicorn serving examples/asgi_app.py on npaio, from Python.

The command line does the same with one option:

    uvicorn --app-dir examples asgi_app:app --loop npaio:new_event_loop

uvicorn >= 0.36 takes any zero-argument loop factory as ``--loop module:attr``
(``loop=`` here). This script:

    python examples/uvicorn_server.py [--host 127.0.0.1] [--port 8000]
                                      [--certfile cert.pem --keyfile key.pem]
"""
import argparse
import os

import uvicorn


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8000)
    parser.add_argument('--certfile')
    parser.add_argument('--keyfile')
    args = parser.parse_args()
    uvicorn.run('asgi_app:app', app_dir=os.path.dirname(os.path.abspath(__file__)),
                loop='npaio:new_event_loop', host=args.host, port=args.port,
                ssl_certfile=args.certfile, ssl_keyfile=args.keyfile)


if __name__ == '__main__':
    main()
