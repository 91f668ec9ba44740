"""A local GCS for tests: gcp-storage-emulator plus an HTTPS proxy in front of it.

`start()` runs both in one subprocess and returns it with the environment variables that point
TensorFlow (tf.io.gfile, tf.data), orbax/tensorstore and gcsfs at it (see README, "Cloud storage").

TensorFlow's GCS filesystem has its endpoints compiled in (https://www.googleapis.com/storage/v1/,
https://storage.googleapis.com/BUCKET/OBJECT); it has no emulator variable. Its HTTP client
(libcurl) does honour `https_proxy` and `CURL_CA_BUNDLE`, so this proxy answers CONNECT with TLS
under a test-only certificate for those hosts (tests/fixtures/gcs_proxy/, CA:TRUE, never trusted
outside a test) and forwards each request, unencrypted, to the emulator.

Run by hand: `python tests/gcs_emulator.py` prints the variables to export and serves until ^C.
With GCS_EMULATOR_LOG=FILE set (for start() too), the emulator appends a line per request to FILE:
start time, seconds it took, method, path, status, body bytes.
"""
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

_FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'gcs_proxy')
CERT = os.path.join(_FIXTURES, 'cert.pem')
KEY = os.path.join(_FIXTURES, 'key.pem')


def _read_head(sock):
  data = b''
  while b'\r\n\r\n' not in data:
    chunk = sock.recv(65536)
    if not chunk:
      return None, b''
    data += chunk
  head, rest = data.split(b'\r\n\r\n', 1)
  return head, rest


def _recv_more(sock, data):
  chunk = sock.recv(65536)
  if not chunk:
    raise ValueError('the client closed the connection mid-request')
  return data + chunk


def _dechunk(sock, data):
  body = b''
  while True:
    while b'\r\n' not in data:
      data = _recv_more(sock, data)
    size_line, data = data.split(b'\r\n', 1)
    size = int(size_line.split(b';')[0], 16)
    while len(data) < size + 2:
      data = _recv_more(sock, data)
    body, data = body + data[:size], data[size + 2:]
    if size == 0:
      return body


def _forward(client, head, rest, ports):
  """One request per connection: the emulator (http.server, HTTP/1.0) closes after each. The whole
  request is read before it is sent on, and the answer sent back after: one thread per socket (an
  SSL socket read and closed from two threads breaks)."""
  proxy_port, emulator_port = ports
  lines = head.decode('latin-1').split('\r\n')
  method, target, version = (lines[0].split(' ', 2) + ['HTTP/1.1'])[:3]
  if target.startswith('http://') or target.startswith('https://'):
    target = '/' + target.split('/', 3)[3] if target.count('/') >= 3 else '/'
  headers = [f'{method} {target} {version}']
  expect_continue = chunked = False
  length = 0
  for line in lines[1:]:
    name = line.split(':', 1)[0].strip().lower()
    if name == 'expect':
      # http.server never sends "100 Continue": curl would wait a second per upload.
      expect_continue = True
      continue
    if name == 'transfer-encoding' and 'chunked' in line.lower():
      chunked = True
      continue
    if name in ('host', 'proxy-connection', 'connection', 'content-length'):
      length = int(line.split(':', 1)[1]) if name == 'content-length' else length
      continue
    headers.append(line)
  # The emulator builds upload URLs (Location) from Host: point them at this proxy, which then
  # gets the upload's PUTs as plain HTTP (localhost is in no_proxy) and can fix them up.
  headers += [f'Host: localhost:{proxy_port}', 'Connection: close']
  if expect_continue:
    client.sendall(b'HTTP/1.1 100 Continue\r\n\r\n')
  if chunked:  # some emulator handlers would store the chunk framing: send it with a length
    rest = _dechunk(client, rest)
  while len(rest) < length:
    rest = _recv_more(client, rest)
  if chunked or length or method in ('POST', 'PUT', 'PATCH'):
    headers.append(f'Content-Length: {len(rest)}')
  with socket.create_connection(('localhost', emulator_port)) as backend:
    backend.sendall(('\r\n'.join(headers) + '\r\n\r\n').encode('latin-1') + rest)
    while True:
      chunk = backend.recv(65536)
      if not chunk:
        break
      client.sendall(chunk)


def _handle(client, ports, context):
  try:
    head, rest = _read_head(client)
    if head is None:
      return
    if head.startswith(b'CONNECT '):
      client.sendall(b'HTTP/1.1 200 Connection established\r\n\r\n')
      tls = context.wrap_socket(client, server_side=True)
      head, rest = _read_head(tls)
      if head is not None:
        _forward(tls, head, rest, ports)
      tls.close()
    else:
      _forward(client, head, rest, ports)
  except (OSError, ValueError, ssl.SSLError) as e:
    print(f'gcs_proxy: {e!r}', file=sys.stderr)
  finally:
    client.close()


def _serve_proxy(server, ports):
  context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
  context.load_cert_chain(CERT, KEY)
  while True:
    client, _ = server.accept()
    threading.Thread(target=_handle, args=(client, ports, context), daemon=True).start()


def _patch_empty_uploads():
  """The emulator reads an empty upload body as None and fails on len(None); TF writes empty
  objects (directory markers, empty files)."""
  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top
  read_data = server._read_data  # pylint: disable=protected-access

  def _read_data(request_handler, query):
    data = read_data(request_handler, query)
    if data is None and ('uploadType' in query or 'upload_id' in query):
      return b''
    return data
  server._read_data = _read_data  # pylint: disable=protected-access


def _patch_generation_header():
  """tensorstore (orbax) reads an object's generation from the x-goog-generation header of a
  download, as GCS sends it; the emulator leaves it out ("Malformed StorageGeneration")."""
  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top
  download = objects.download

  def with_generation(request, response, storage, *args, **kwargs):
    download(request, response, storage, *args, **kwargs)
    if response.status.value in (200, 206):
      obj = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
      response['x-goog-generation'] = str(obj['generation'])
      response['x-goog-metageneration'] = str(obj.get('metageneration', '1'))
  objects.download = with_generation  # objects.get calls it for alt=media
  server.HANDLERS = tuple(
      (regex, {m: with_generation if f is download else f for m, f in methods.items()})
      for regex, methods in server.HANDLERS)


def _patch_http_server():
  """http.server as the emulator runs it: no waits that a real GCS doesn't make."""
  from http import server as http_server  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top
  # Its listen backlog is 5: a burst of connections (tensorstore reads chunks in parallel, the
  # proxy opens one per request) can overflow it while the one thread is busy, and Linux drops the
  # SYNs that don't fit; the client sends them again after 1 s.
  http_server.HTTPServer.request_queue_size = 128
  handler = server.RequestHandler
  parse_request = handler.parse_request

  def parse_request_continue(self):
    # An HTTP/1.0 server never sends "100 Continue", and curl waits a second for it before it
    # sends a body it announced with "Expect: 100-continue" (tensorstore's curl does for bodies
    # over 1 MiB; TF's, through the proxy, for every upload, but the proxy answers those).
    if not parse_request(self):
      return False
    if (self.headers.get('Expect', '').lower() == '100-continue' and
        self.request_version >= 'HTTP/1.1'):
      self.wfile.write(b'HTTP/1.1 100 Continue\r\n\r\n')
    return True
  handler.parse_request = parse_request_continue

  log = os.environ.get('GCS_EMULATOR_LOG')
  if log:
    handle_one_request, send_response = handler.handle_one_request, handler.send_response

    def send_response_logged(self, code, message=None):
      self.logged_status = code
      send_response(self, code, message)

    def handle_one_request_logged(self):
      start = time.time()
      handle_one_request(self)
      if getattr(self, 'command', None):
        with open(log, 'a') as f:
          f.write(f'{start:.3f}\t{time.time() - start:.3f}\t{self.command}\t{self.path}\t'
                  f'{getattr(self, "logged_status", "")}\t'
                  f'{self.headers.get("Content-Length", "")}\n')
    handler.send_response = send_response_logged
    handler.handle_one_request = handle_one_request_logged


def environment(proxy_port, emulator_port):
  """The variables that send every GCS client in this process and its children to the emulator."""
  proxy = f'http://localhost:{proxy_port}'
  emulator = f'http://localhost:{emulator_port}'
  return {
      # TF's GCS filesystem (libcurl): endpoints fixed, so through the proxy, trusting its cert.
      'https_proxy': proxy, 'HTTPS_PROXY': proxy, 'CURL_CA_BUNDLE': CERT,
      'no_proxy': 'localhost,127.0.0.1', 'NO_PROXY': 'localhost,127.0.0.1',
      # orbax -> tensorstore's gcs driver: its endpoint is configurable.
      'TENSORSTORE_GCS_HTTP_URL': emulator,
      # gcsfs, google-cloud-storage.
      'STORAGE_EMULATOR_HOST': emulator,
      # TF and tensorstore both send this bearer token instead of looking for credentials (no
      # metadata-server probe, no ~/.config/gcloud).
      'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator', 'NO_GCE_CHECK': 'true',
      # A failed request is retried after 0.1 s, not TF's 1 s doubling to 32 s.
      'GCS_RETRY_CONFIG_INIT_DELAY_TIME_US': '100000',
      'GCS_RETRY_CONFIG_MAX_DELAY_TIME_US': '1000000',
      # TF reads a GCS file through a buffer of this many MB, allocated whole for every file it
      # opens: its default 64 costs ~40 ms of CPU per opened file (~90 ms wall on 2 busy cores);
      # the test's files are smaller than 1 MB.
      'GCS_READ_CACHE_BLOCK_SIZE_MB': '1',
  }


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def start(bucket='test', timeout=60):
  """Starts emulator + proxy in a subprocess (bucket `bucket` exists). Returns (process, env):
  the caller kills the process and puts env into os.environ."""
  proxy_port, emulator_port = _free_port(), _free_port()
  process = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(proxy_port),
                              str(emulator_port), bucket])
  deadline = time.time() + timeout
  for port in (emulator_port, proxy_port):
    while True:
      if process.poll() is not None:
        raise RuntimeError(f'GCS emulator exited with {process.returncode}')
      try:
        socket.create_connection(('localhost', port), timeout=1).close()
        break
      except OSError:
        if time.time() > deadline:
          process.kill()
          raise RuntimeError('GCS emulator did not start') from None
        time.sleep(0.1)
  return process, environment(proxy_port, emulator_port)


def main(proxy_port, emulator_port, bucket):
  import logging  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top
  # It logs every miss ("Resource not found"); a miss is an ordinary answer here (exists()).
  logging.getLogger('gcp_storage_emulator').setLevel(logging.CRITICAL)
  _patch_empty_uploads()
  _patch_generation_header()
  _patch_http_server()
  # The proxy listens first, the emulator last: start() waits for both ports.
  proxy = socket.create_server(('localhost', proxy_port), backlog=128)
  threading.Thread(target=_serve_proxy, args=(proxy, (proxy_port, emulator_port)),
                   daemon=True).start()
  emulator = server.create_server('localhost', emulator_port, in_memory=True,
                                  default_bucket=bucket)
  emulator.start()
  while True:
    time.sleep(3600)


if __name__ == '__main__':
  if len(sys.argv) == 1:
    ports = _free_port(), _free_port()
    for name, value in environment(*ports).items():
      print(f'export {name}={value}')
    print('# bucket gs://test; ^C stops it', flush=True)
    main(*ports, 'test')
  else:
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
