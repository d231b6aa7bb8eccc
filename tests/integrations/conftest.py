"""Fixtures for the server integration tests (see _integ.py)."""

import ssl

import pytest


@pytest.fixture(scope='session')
def tls(tmp_path_factory):
    """A throw-away CA and a server certificate for 127.0.0.1 / localhost.

    Returns (certfile, keyfile, client_context)."""
    trustme = pytest.importorskip('trustme')
    ca = trustme.CA()
    cert = ca.issue_cert('127.0.0.1', 'localhost')
    d = tmp_path_factory.mktemp('tls')
    certfile, keyfile = d / 'cert.pem', d / 'key.pem'
    cert.private_key_pem.write_to_path(str(keyfile))
    with open(certfile, 'wb') as f:
        for pem in cert.cert_chain_pems:
            f.write(pem.bytes())
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return str(certfile), str(keyfile), client
