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
