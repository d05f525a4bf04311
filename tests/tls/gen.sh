#!/bin/sh
# Regenerates the test CA and the server certificate the TLS tests trust (test use only: the
# keys are public). Valid for ten years; run again if they ever expire.
set -e
cd "$(dirname "$0")"
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=ringcast test CA" \
  -keyout ca.key -out ca.pem -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
for name in server other; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost ($name)" \
    -keyout "$name.key" -out "$name.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext.cnf
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile ext.cnf -out "$name.pem" 2>/dev/null
  rm -f "$name.csr" ext.cnf
done
rm -f ca.srl
