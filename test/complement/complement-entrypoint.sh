#!/bin/sh
# Entrypoint of the Complement image. It runs on EVERY container start: Complement commits
# blueprint containers to images and starts them again, so /data may already hold a
# config, a signing key and a database, which are reused.
set -e
: "${SERVER_NAME:=localhost}"
DATA_DIR=${DATA_DIR:-/data}
CA_CERT=/complement/ca/ca.crt
CA_KEY=/complement/ca/ca.key
TLS_DIR="$DATA_DIR/tls"
APPSERVICE_DIR=${APPSERVICE_DIR:-/complement/appservice}
export SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

mkdir -p "$DATA_DIR" /etc/ssl/certs
# The only CA that matters inside the test network is Complement's (new on every run):
# trust it for outgoing federation, and issue our federation certificate from it.
cat "$CA_CERT" > "$SSL_CERT_FILE"
complement-certgen -name "$SERVER_NAME" -ca-cert "$CA_CERT" -ca-key "$CA_KEY" \
  -cert "$TLS_DIR/server.crt" -key "$TLS_DIR/server.key" -chain "$TLS_DIR/fullchain.crt"

# First start only: settings a test network needs and production must not have.
# Later starts (restarts, committed blueprints) keep this file.
if [ ! -f "$DATA_DIR/myelin.yaml" ]; then
  cat > "$DATA_DIR/myelin.yaml" <<YAML
registration:
  mode: open
  min_password_length: 0
passwords:
  bcrypt_cost: 4
database:
  sqlite_synchronous: normal
rate_limits:
  enabled: false
federation:
  allow_private_addresses: true
  share_device_names: true
push:
  allow_private_addresses: true
media:
  url_preview:
    allow_private_addresses: true
app_services:
  config_files: ["$APPSERVICE_DIR/*.yaml"]
server_notices:
  enabled: true
  system_user_localpart: _server
  system_user_display_name: Server Alert
  room_name: Server Notices
YAML
fi

cd "$DATA_DIR"
exec myelin serve --data-dir "$DATA_DIR" --server-name "$SERVER_NAME" \
  --listen "${CLIENT_LISTEN:-0.0.0.0:8008}" --federation-listen "${FEDERATION_LISTEN:-0.0.0.0:8448}" \
  --tls-cert "$TLS_DIR/fullchain.crt" --tls-key "$TLS_DIR/server.key" \
  --federation-ca "$SSL_CERT_FILE" --federation-allow-private \
  --registration-shared-secret "${REGISTRATION_SHARED_SECRET:-complement}"
