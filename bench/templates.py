"""Configuration templates of the processes the benchmark starts: the nginx origin,
nginx and HAProxy as proxies, and the Trellis proxies. Filled in with str.format."""

NGINX_COMMON = """\
worker_processes 1;
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}.err warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {dir}/{name}-tmp/body;
  proxy_temp_path {dir}/{name}-tmp/proxy;
  fastcgi_temp_path {dir}/{name}-tmp/fastcgi;
  uwsgi_temp_path {dir}/{name}-tmp/uwsgi;
  scgi_temp_path {dir}/{name}-tmp/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
{body}
}}
"""

ORIGIN_BODY = """\
  server {{
    listen {host}:{h1};
    listen {host}:{h2} http2;
    default_type text/plain;
    location / {{ return 200 "ok\\n"; }}
  }}
"""

NGINX_PROXY_BODY = """\
  upstream origin {{
    server {host}:{origin};
    keepalive 64;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }}
  server {{
    listen {host}:{port}{h2};
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }}
  }}
"""

HAPROXY_CFG = """\
global
    maxconn 4096
    nbthread 1

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s

frontend fe
    bind {host}:{port}{h2}
    default_backend be

backend be
    server origin {host}:{origin}
"""

TRELLIS_1HOP = """\
listeners:
  - name: web
    address: {host}:{port}
    protocol: auto
    routes:
      - backend: origin
backends:
  - name: origin
    protocol: http1
    endpoints: [{host}:{origin}]
    loadBalancer: ewma
admin: {host}:{admin}
drainTimeout: 1s
"""

TRELLIS_OUTBOUND = """\
listeners:
  - name: outbound
    address: {host}:{port}
    protocol: auto
    routes:
      - backend: inbound
backends:
  - name: inbound
    protocol: http2
    endpoints: [{host}:{next}]
    loadBalancer: ewma
admin: {host}:{admin}
drainTimeout: 1s
"""

TRELLIS_TRACING = """\
tracing:
  endpoint: http://{host}:{port}
  protocol: grpc
  sampling: 0.01
  serviceName: bench
"""

# Plain TCP relays for bench/streams.py: one instance per hop, one relay per stream
# (redis, gRPC) in each.
NGINX_STREAM = """\
{load_module}worker_processes 1;
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}.err warn;
events {{ worker_connections 4096; multi_accept on; }}
stream {{
{body}}}
"""

NGINX_STREAM_RELAY = """\
  server {{ listen {host}:{port}; proxy_pass {host}:{next}; }}
"""

HAPROXY_TCP = """\
global
    maxconn 4096
    nbthread 1

defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
{body}"""

HAPROXY_TCP_RELAY = """
listen {name}
    bind {host}:{port}
    server next {host}:{next}
"""

# The mesh of bench/streams.py: strict mTLS, redis as an opaque TCP Service, the echo
# server as a gRPC Service.
STREAMS_MESH = """\
apiVersion: trellis.dev/v1alpha1
kind: MeshConfig
metadata: {{name: default}}
spec: {{mtls: {{mode: strict}}}}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {{name: redis}}
spec: {{selector: {{app: redis}}, ports: [{{port: {redis}, appProtocol: tcp}}]}}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {{name: echo}}
spec: {{selector: {{app: echo}}, ports: [{{port: {echo}, appProtocol: grpc}}]}}
"""
